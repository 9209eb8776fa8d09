"""The tables the code defines are the ones the docs show: the audit event vocabulary (one
registry, which every domain event is written through) and the settings read from the
environment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction

from cleanroom.audit.events import EVENT_TYPES, UnknownEventType, event_table
from cleanroom.audit.log import events_of, record_platform_event, record_room_event

ROOT = Path(settings.BASE_DIR)
AUDIT_DOCS = (ROOT / "cleanroom" / "audit" / "README.md").read_text()
CONFIGURATION = (ROOT / "cleanroom" / "docs" / "configuration.md").read_text()


def test_the_documented_event_table_is_the_vocabulary_rendered():
    assert event_table() in AUDIT_DOCS, "update cleanroom/audit/README.md with event_table()"


@pytest.mark.django_db
def test_an_event_type_outside_the_vocabulary_is_refused_and_nothing_is_recorded(world):
    room = world.room()
    before = len(events_of(f"room/{room.pk}"))
    with pytest.raises(UnknownEventType, match=r"query\.teleported"), transaction.atomic():
        record_room_event(room.pk, "query.teleported", by=world.alice, subject="query:1")
    with pytest.raises(UnknownEventType), transaction.atomic():
        record_platform_event("dataset.borrowed", by=world.alice, subject="dataset:1")
    assert len(events_of(f"room/{room.pk}")) == before


def test_every_type_the_offline_verifier_reads_is_in_the_vocabulary():
    source = (ROOT / "cleanroom" / "audit" / "verify.py").read_text()
    read = set(re.findall(r'kind == "([a-z_.]+)"', source))
    for group in re.findall(r"kind in \(([^)]*)\)", source):
        read |= set(re.findall(r'"([a-z_.]+)"', group))
    read |= set(re.findall(r'^_DECISIONS = \{"([a-z_.]+)": "\w+", "([a-z_.]+)"', source, re.M)[0])
    assert read and read <= EVENT_TYPES, sorted(read - EVENT_TYPES)


def _read_from_environment() -> set[str]:
    names = set()
    for path in ("cleanroom/settings.py", "cleanroom/bootstrap.py", "jobs/runner.py"):
        source = (ROOT / path).read_text()
        names |= set(re.findall(r'env\.\w+\(\s*"([A-Z0-9_]+)"', source))
        names |= set(re.findall(r'os\.environ\.get\(\s*"([A-Z0-9_]+)"', source))
    return names


def test_the_configuration_table_lists_exactly_the_settings_read_from_the_environment():
    documented = {
        name
        for line in CONFIGURATION.splitlines()
        if line.startswith("| `")
        for name in re.findall(r"`([A-Z0-9_]+)`", line.split("|")[1])
    }
    read = _read_from_environment()
    assert read - documented == set(), "settings read but not in configuration.md's table"
    assert documented - read == set(), "settings in configuration.md's table that nothing reads"
