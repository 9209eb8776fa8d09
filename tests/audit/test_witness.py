"""Member organisations witness the logs: check consistency, cosign, refuse a second history."""

from __future__ import annotations

import io
import time

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone

from cleanroom.audit import checkpoints
from cleanroom.audit.log import record_event
from cleanroom.audit.models import Checkpoint, Cosignature, LogKey, Witness
from cleanroom.audit.notes import format_checkpoint
from cleanroom.audit.verifier.notes import verify_checkpoint, verify_cosignatures, verify_note
from tests.audit.tampering import tamper


@pytest.fixture(autouse=True)
def sign_only_when_asked(settings):
    settings.AUDIT_CHECKPOINT_SIGNING = "off"


def grow(log: str, n: int) -> Checkpoint:
    with transaction.atomic():
        for i in range(n):
            record_event(log=log, type="test.event", actor=None, subject=f"job:{i}")
    return checkpoints.sign_checkpoint(log)


def witness(org: str, log: str) -> str:
    out = io.StringIO()
    call_command("witness", "--org", org, "--log", log, stdout=out)
    return out.getvalue().strip()


def keys(*args: str) -> list[str]:
    out = io.StringIO()
    call_command("audit_keys", *args, stdout=out)
    return out.getvalue().splitlines()


@pytest.mark.django_db
def test_a_witness_cosigns_and_the_published_checkpoint_carries_both_signatures(world) -> None:
    checkpoint = grow("room/1", 4)
    assert witness("charite", "room/1") == "cleanroom.local/room/1: cosigned at size 4 (first)"
    note = checkpoints.note_with_cosignatures(checkpoint)
    [log_key, witness_line] = keys("--witnesses")
    assert witness_line.startswith("witness cleanroom.local/witness/charite+")
    witness_key = witness_line.removeprefix("witness ")
    assert verify_note(note, [log_key])[1] == ["cleanroom.local"]
    # A C2SP cosignature/v1, timestamped when the witness cosigned.
    [(name, timestamp)] = verify_cosignatures(note, [witness_key]).items()
    assert name == "cleanroom.local/witness/charite"
    assert abs(timestamp - time.time()) < 600
    # Trusting only the log key, the witness's line is simply not counted.
    assert verify_checkpoint(note, [log_key])[0].size == 4


@pytest.mark.django_db
def test_each_later_checkpoint_is_cosigned_only_after_a_consistency_proof_checks_out(
    world,
) -> None:
    grow("room/1", 3)
    witness("usz", "room/1")
    grow("room/1", 6)
    assert witness("usz", "room/1") == (
        "cleanroom.local/room/1: cosigned at size 9, consistent with size 3 (5-hash proof)"
    )
    assert witness("usz", "room/1") == "cleanroom.local/room/1: already cosigned at size 9"
    assert list(Cosignature.objects.values_list("size", flat=True).order_by("size")) == [3, 9]


@pytest.mark.django_db
def test_a_witness_refuses_a_checkpoint_that_does_not_extend_what_it_cosigned(world) -> None:
    grow("room/1", 5)
    witness("charite", "room/1")
    with transaction.atomic():
        for i in range(2):
            record_event(log="room/1", type="test.event", actor=None, subject=f"job:{i}")
    # The operator signs a checkpoint at size 7 over a history of its own making.
    fake_root = bytes(32)
    key = checkpoints.current_log_key()
    note = checkpoints.sign_with_log_key(
        format_checkpoint(checkpoints.origin_of("room/1"), 7, fake_root), key
    )
    log = Checkpoint.objects.get(log__name="room/1", size=5).log
    Checkpoint.objects.create(log=log, size=7, root_hash=fake_root, note=note, key=key)
    with pytest.raises(CommandError, match="does not extend the size 5 this witness cosigned"):
        witness("charite", "room/1")
    assert not Cosignature.objects.filter(size=7).exists()


@pytest.mark.django_db
def test_a_witness_refuses_a_different_root_at_a_size_it_already_cosigned(world) -> None:
    checkpoint = grow("room/1", 5)
    witness("charite", "room/1")
    other = checkpoints.sign_with_log_key(
        format_checkpoint(checkpoints.origin_of("room/1"), 5, bytes(32)), checkpoint.key
    )
    tamper(
        connection,
        "UPDATE audit_checkpoint SET note = %s, root_hash = %s WHERE id = %s",
        [other, bytes(32), checkpoint.pk],
    )
    with pytest.raises(CommandError, match=r"different root at size 5.*two histories"):
        witness("charite", "room/1")


@pytest.mark.django_db
def test_a_witness_refuses_checkpoints_signed_by_a_key_it_did_not_pin(world) -> None:
    grow("room/1", 2)
    witness("charite", "room/1")
    LogKey.objects.update(retired_at=timezone.now())  # the operator swaps in a new key
    grow("room/1", 2)
    with pytest.raises(CommandError, match="not signed by any trusted key"):
        witness("charite", "room/1")


@pytest.mark.django_db
def test_the_witness_command_names_what_is_missing(world) -> None:
    with pytest.raises(CommandError, match="No organisation 'nobody'"):
        witness("nobody", "room/1")
    with pytest.raises(CommandError, match="room/77 has no signed checkpoint yet"):
        witness("charite", "room/77")


@pytest.mark.django_db
def test_a_witness_key_lives_in_the_key_service_and_is_made_once(world, isolated_storage) -> None:
    grow("platform", 1)
    witness("charite", "platform")
    grow("platform", 1)
    witness("charite", "platform")
    [w] = Witness.objects.all()
    assert (isolated_storage / "keys" / f"{w.key_id}.key").exists()
    assert w.vkey in keys("--witnesses")[-1]
