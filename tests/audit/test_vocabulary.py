"""The tables the code defines are the ones the docs show: the audit event vocabulary (one
registry, which every domain event is written through) and the settings read from the
environment."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction

from cleanroom.audit.events import EVENT_TYPES, VOCABULARY, UnknownEventType, event_table
from cleanroom.audit.log import events_of, record_platform_event, record_room_event
from cleanroom.audit.verifier import VerificationError, rules

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


RULES = Path(rules.__file__)


def _documented_fields() -> dict[str, set[str]]:
    """Each event type's data fields as the vocabulary documents them (the `names` in `data`)."""
    return {
        name: set(re.findall(r"`([a-z_]+)`", events.data))
        for events in VOCABULARY
        for name in events.types
    }


def test_every_event_type_the_domain_rules_mention_is_in_the_vocabulary():
    """Any string in the rules' code that reads like an event type, docstrings included."""
    tree = ast.parse(RULES.read_text())
    mentioned = {
        found
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        for found in re.findall(r"\b[a-z_]+\.[a-z_]+(?:\.[a-z_]+)?\b", node.value)
        if not found.endswith(".py")
    }
    assert mentioned <= EVENT_TYPES, sorted(mentioned - EVENT_TYPES)
    # A rule runs only for a type its table lists (DomainRules.feed skips the others).
    compared = {
        constant.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare) and getattr(node.left, "id", None) == "kind"
        for constant in ast.walk(node)
        if isinstance(constant, ast.Constant) and isinstance(constant.value, str)
    }
    assert compared and compared <= set(rules.REQUIRED_FIELDS), sorted(
        compared - set(rules.REQUIRED_FIELDS)
    )


def test_the_fields_the_domain_rules_require_are_the_vocabularys():
    documented = _documented_fields()
    for event_type, fields in rules.REQUIRED_FIELDS.items():
        assert event_type in EVENT_TYPES, event_type
        missing = set(fields) - documented[event_type]
        assert not missing, f"{event_type}: the rules require {sorted(missing)}, undocumented"


@pytest.mark.parametrize(
    ("event_type", "field"),
    [(t, f) for t, fields in rules.REQUIRED_FIELDS.items() for f in fields],
)
def test_an_event_lacking_a_field_the_rules_require_is_refused_naming_it(event_type, field):
    data = {name: "x" for name in rules.REQUIRED_FIELDS[event_type] if name != field}
    event = {"type": event_type, "time": "2026-01-01T00:00:00Z", "data": data}
    with pytest.raises(
        VerificationError, match=rf"^event 0 \({event_type}\) lacks the field '{field}'$"
    ):
        rules.DomainRules().feed(0, event)


def _read_from_environment() -> set[str]:
    names = set()
    for path in ("cleanroom/settings.py", "cleanroom/bootstrap.py", "jobs/execution/sites.py"):
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
