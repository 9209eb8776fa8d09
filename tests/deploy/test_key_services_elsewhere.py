"""The compose demo's key services: each in its own container, started by
deploy/keyservice-entrypoint.sh, serves once the organisation's pins arrive; the demo writes
them (`manage.py demo --key-services-pinned-in`) and waits until each answers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings as django_settings

from jobs.demo.key_services import pin_key_services_elsewhere
from keyservice import config
from keyservice.signing import HEADER, sign_request
from parties.selectors import pinned_approvers
from tests import factories

pytestmark = pytest.mark.django_db
ENTRYPOINT = django_settings.BASE_DIR / "deploy" / "keyservice-entrypoint.sh"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_key_service_container_serves_what_its_organisation_pinned(world, tmp_path, settings):
    factories.register_passkey(world.alice, world.charite)
    port, metrics_port = _free_port(), _free_port()
    pins = tmp_path / "pins"
    environment = {
        # The image's PATH starts with its virtual environment, as this one does here.
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(django_settings.BASE_DIR),
        "KEYSERVICE_LABEL": "charite",
        "KEYSERVICE_STATE": str(tmp_path / "state"),
        "KEYSERVICE_PINNED": str(pins / "charite" / "config.json"),
        "KEYSERVICE_HOST": "127.0.0.1",
        "KEYSERVICE_PORT": str(port),
        "KEYSERVICE_METRICS_PORT": str(metrics_port),
    }
    service = subprocess.Popen(
        [str(ENTRYPOINT)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        settings.KEY_SERVICES = {"charite": f"http://127.0.0.1:{port}"}
        settings.KEY_SERVICE_CALLER_KEY = tmp_path / "caller.key"
        urls = pin_key_services_elsewhere([world.charite], pins, timeout=60)
        assert urls == {"charite": f"http://127.0.0.1:{port}"}
        # It made its token on its first start, then served once the pins were there.
        assert service.stdout.readline().startswith("token charite")
        assert service.stdout.readline().split()[0] == "ready"
        # It serves what was pinned: the owners' credentials, and the web tier as a caller.
        pinned, _, _ = config.load(tmp_path / "state")
        assert list(pinned.approvers) == list(pinned_approvers(world.charite))
        caller = Ed25519PrivateKey.from_private_bytes(settings.KEY_SERVICE_CALLER_KEY.read_bytes())
        signed = sign_request(settings.KEY_SERVICE_CALLER, caller, "POST", "/keys", b"{}")
        request = urllib.request.Request(  # noqa: S310 - the test's own server
            f"{urls['charite']}/keys", data=b"{}", headers={HEADER: signed}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            assert json.load(response)["kek_id"]
        # The token's PIN stays in the service's own state folder, not with the pins.
        assert not any(p.name == "token.pin" for p in pins.rglob("*"))
    finally:
        service.terminate()
        service.wait(timeout=30)
        service.stdout.close()


def test_an_organisation_without_a_named_key_service_is_refused(world, tmp_path, settings):
    settings.KEY_SERVICES = {}
    settings.KEY_SERVICE_CALLER_KEY = tmp_path / "caller.key"
    with pytest.raises(RuntimeError, match="names no key service"):
        pin_key_services_elsewhere([world.charite], tmp_path / "pins", timeout=1)
