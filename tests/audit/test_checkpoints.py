"""Signed checkpoints, the log key, and the signing after each batch of appends."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from cleanroom.audit import checkpoints, tree
from cleanroom.audit.log import record_event
from cleanroom.audit.models import AuditEvent, AuditLog, Checkpoint, LogKey
from cleanroom.audit.verifier import VerificationError
from cleanroom.audit.verifier.merkle import leaf_hash, root_from_leaf_hashes
from cleanroom.audit.verifier.notes import verify_checkpoint
from tests.audit.tampering import tamper


def append(log: str, n: int = 1) -> None:
    with transaction.atomic():
        for i in range(n):
            record_event(log=log, type="test.event", actor=None, subject=f"job:{i}")


def trust_lines() -> list[str]:
    out = io.StringIO()
    call_command("audit_keys", stdout=out)
    return out.getvalue().split()


def event_root(log: str) -> bytes:
    rows = AuditEvent.objects.filter(log__name=log).order_by("seq")
    return root_from_leaf_hashes([leaf_hash(bytes(e.canonical)) for e in rows])


@pytest.fixture(autouse=True)
def sign_only_when_asked(settings):
    settings.AUDIT_CHECKPOINT_SIGNING = "off"


@pytest.mark.django_db
def test_a_checkpoint_is_a_signed_note_over_origin_size_and_root_that_the_printed_key_verifies(
    settings,
) -> None:
    settings.CLEANROOM_LOG_ORIGIN_PREFIX = "cleanroom.example"
    append("room/12", 5)
    checkpoint = checkpoints.sign_checkpoint("room/12")
    parsed, signed_by = verify_checkpoint(
        checkpoint.note, trust_lines(), origin="cleanroom.example/room/12"
    )
    assert (parsed.size, parsed.root_hash) == (5, event_root("room/12"))
    assert signed_by == ["cleanroom.example"]
    assert checkpoint.note.startswith("cleanroom.example/room/12\n5\n")


@pytest.mark.django_db
def test_the_log_key_is_made_once_in_the_key_service_and_only_its_public_half_is_stored(
    isolated_storage,
) -> None:
    append("platform")
    checkpoints.sign_checkpoint("platform")
    append("room/1")
    checkpoints.sign_checkpoint("room/1")
    [key] = LogKey.objects.all()
    assert (isolated_storage / "keys" / f"{key.key_id}.key").exists()
    assert {f.name for f in LogKey._meta.concrete_fields} == {
        "id",
        "name",
        "key_id",
        "note_key_id",
        "public_key",
        "created_at",
        "retired_at",
    }
    assert trust_lines() == [key.vkey]


@pytest.mark.django_db
def test_signing_again_without_new_events_makes_no_new_checkpoint() -> None:
    append("room/2", 3)
    first = checkpoints.sign_checkpoint("room/2")
    assert checkpoints.sign_checkpoint("room/2") == first
    append("room/2", 2)
    second = checkpoints.sign_checkpoint("room/2")
    assert (first.size, second.size) == (3, 5)
    assert Checkpoint.objects.filter(log__name="room/2").count() == 2


@pytest.mark.django_db
def test_an_empty_or_unknown_log_gets_no_checkpoint() -> None:
    assert checkpoints.sign_checkpoint("room/404") is None


@pytest.mark.django_db
def test_a_checkpoint_signed_by_another_key_or_for_another_log_is_refused() -> None:
    append("room/3")
    append("room/4")
    note = checkpoints.sign_checkpoint("room/3").note
    with pytest.raises(VerificationError, match="origin"):
        verify_checkpoint(note, trust_lines(), origin=checkpoints.origin_of("room/4"))
    other = "cleanroom.local+00000000+AQ" + "A" * 42 + "="
    with pytest.raises(VerificationError):
        verify_checkpoint(note, [other])


@pytest.mark.django_db
def test_the_signer_refuses_to_vouch_for_an_event_changed_after_it_was_appended() -> None:
    append("room/5", 4)
    checkpoints.sign_checkpoint("room/5")
    append("room/5", 3)
    event = AuditEvent.objects.get(log__name="room/5", seq=5)
    tamper(
        connection, "UPDATE audit_auditevent SET canonical = %s WHERE id = %s", [b"{}", event.pk]
    )
    with pytest.raises(checkpoints.CheckpointError, match="event 5 was changed"):
        checkpoints.sign_checkpoint("room/5")
    assert Checkpoint.objects.get(log__name="room/5").size == 4


@pytest.mark.django_db
def test_the_manage_command_signs_every_log_that_grew() -> None:
    append("platform", 2)
    append("room/6", 1)
    out = io.StringIO()
    call_command("sign_checkpoints", stdout=out)
    assert sorted(out.getvalue().splitlines()) == [
        "platform: signed at size 2",
        "room/6: signed at size 1",
    ]
    out = io.StringIO()
    call_command("sign_checkpoints", stdout=out)
    assert out.getvalue() == ""


@pytest.mark.django_db
def test_a_checkpoint_is_signed_once_per_log_after_a_transaction_commits(
    settings, django_capture_on_commit_callbacks
) -> None:
    settings.AUDIT_CHECKPOINT_SIGNING = "inline"
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        append("room/7", 3)
        append("room/8", 1)
    assert [c.audit_log for c in callbacks] == ["room/7", "room/8"]
    assert Checkpoint.objects.get(log__name="room/7").size == 3
    assert Checkpoint.objects.get(log__name="room/8").size == 1


@pytest.mark.django_db
def test_nothing_is_signed_for_appends_that_were_rolled_back(
    settings, django_capture_on_commit_callbacks
) -> None:
    settings.AUDIT_CHECKPOINT_SIGNING = "inline"
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        append("room/9")
        transaction.set_rollback(True)
    assert callbacks == []
    assert not AuditLog.objects.filter(name="room/9", size__gt=0).exists()


@pytest.mark.django_db
def test_the_checkpoint_root_is_read_from_stored_nodes_not_recomputed_from_events() -> None:
    append("room/10", 9)
    checkpoint = checkpoints.sign_checkpoint("room/10")
    head = AuditLog.objects.get(name="room/10")
    assert bytes(checkpoint.root_hash) == tree.root(head) == event_root("room/10")
