"""What an operator's screen shows of refused requests and of server errors."""

from __future__ import annotations

import io
import logging

import pytest
from django.test import Client

from cleanroom.log_filters import RefusalsWithoutTraceback
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def screen():
    """What the project's console handler (settings.LOGGING) writes."""
    console = next(
        handler
        for handler in logging.getLogger().handlers
        if any(isinstance(f, RefusalsWithoutTraceback) for f in handler.filters)
    )
    written = io.StringIO()
    before = console.setStream(written)
    yield written
    console.setStream(before)


def test_a_refused_request_is_one_line_and_a_server_error_keeps_its_traceback(screen):
    dave = factories.user("dave")
    factories.organization("charite", "Charité", dave="auditor")
    client = Client()
    client.force_login(dave)
    assert client.get("/rooms/new/").status_code == 403
    try:
        raise RuntimeError("the database went away")
    except RuntimeError:
        logging.getLogger("django.request").error(
            "Internal Server Error: /x/", exc_info=True, extra={"status_code": 500}
        )
    logged = screen.getvalue()
    assert "Forbidden (Permission denied): /rooms/new/" in logged
    assert "PermissionDenied" not in logged and logged.count("Traceback") == 1
    assert "RuntimeError: the database went away" in logged
