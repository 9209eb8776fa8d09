"""Tampering with the log behind the database's back, or with a bundle in transit, is caught by
the offline verifier (run as a regulator runs it) and by the platform's own verification, each
naming what failed."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone

from cleanroom.audit import checkpoints, merkle
from cleanroom.audit.bundles import export_bundle
from cleanroom.audit.log import record_event, room_log_name
from cleanroom.audit.models import AuditEvent, AuditLog, Checkpoint, LogKey
from cleanroom.audit.verification import verify_log
from cleanroom.audit.verifier import VerificationError
from cleanroom.audit.verifier.bundle import parse_trust_file, verify_bundle
from cleanroom.audit.verifier.merkle import leaf_hash
from tests.audit.bundling import rewrite_zip, run_verify, trust_file
from tests.audit.domain import happy_run, record_run
from tests.audit.tampering import tamper

pytestmark = pytest.mark.django_db

SQL = b"SELECT age_band, COUNT(*) FROM charite.patients GROUP BY age_band"


@pytest.fixture(autouse=True)
def sign_only_when_asked(settings):
    settings.AUDIT_CHECKPOINT_SIGNING = "off"


@pytest.fixture
def study(world):
    """A room whose log holds a whole query run and the query text as an attachment, signed and
    cosigned, with a regulator's trust file written before anything went wrong."""
    room = world.room("study")
    log = room_log_name(room.pk)
    record_run(log, happy_run())
    with transaction.atomic():
        record_event(
            log=log,
            type="query.text",
            actor=None,
            subject=f"room:{room.pk}",
            data={"query": "query:7"},
            attach={"query.sql": SQL},
        )
    checkpoints.sign_checkpoint(log)
    call_command("witness", "--org", "charite", "--log", log, stdout=io.StringIO())
    return room


@pytest.fixture
def trust(tmp_path, study) -> Path:
    return trust_file(tmp_path)


def log_of(room) -> str:
    return room_log_name(room.pk)


def row(room, event_type: str, nth: int = 0) -> AuditEvent:
    """The `nth` event of a type in the room's log (the log opens with the room's own events)."""
    return AuditEvent.objects.filter(log__name=log_of(room), type=event_type).order_by("seq")[nth]


def exported(room, tmp_path: Path, name: str = "bundle.zip") -> Path:
    path = tmp_path / name
    export_bundle(room=room, output=path)
    return path


def assert_caught(bundle: Path, trust: Path, offline: str, room=None, service: str = "", **kw):
    """verify.pyz fails naming `offline`; the platform's verification fails naming `service`."""
    verdict = run_verify(bundle, trust, **kw)
    assert verdict.returncode == 1, verdict.stdout
    assert verdict.stderr.startswith("FAILED: ")
    assert offline in verdict.stderr
    if room is not None:
        trusted = [v for v in trust.read_text().split() if "+" in v]
        with pytest.raises(VerificationError) as failure:
            verify_log(log_of(room), trusted=trusted)
        assert service in str(failure.value)


def test_an_untouched_log_and_its_bundle_pass_both_verifiers(study, trust, tmp_path) -> None:
    assert run_verify(exported(study, tmp_path), trust).ok
    report = verify_log(log_of(study), trusted=parse_trust_file(trust.read_text()).log_keys)
    assert (report.size, report.attachments) == (len(happy_run()) + 3, 1)  # + room events


def test_an_event_edited_by_the_database_superuser_is_caught(study, trust, tmp_path) -> None:
    event = row(study, "result.released")
    forged = bytes(event.canonical).replace(b'"receivers":["org:3"]', b'"receivers":["org:4"]')
    assert forged != bytes(event.canonical)
    tamper(
        connection, "UPDATE audit_auditevent SET canonical = %s WHERE id = %s", [forged, event.pk]
    )
    assert_caught(
        exported(study, tmp_path),
        trust,
        "the Merkle root of events.jsonl does not match checkpoint.txt",
        study,
        f"event {event.seq} was changed after it was appended",
    )


def test_an_edit_with_the_tree_recomputed_still_fails_the_signed_checkpoint(
    study, trust, tmp_path
) -> None:
    log = AuditLog.objects.get(name=log_of(study))
    event = row(study, "query.approved")
    forged = bytes(event.canonical).replace(b'"organization":"org:1"', b'"organization":"org:5"')
    tamper(
        connection, "UPDATE audit_auditevent SET canonical = %s WHERE id = %s", [forged, event.pk]
    )
    rebuild_tree(log)
    assert_caught(
        exported(study, tmp_path),
        trust,
        "the Merkle root of events.jsonl does not match checkpoint.txt",
        study,
        "does not match the signed checkpoint",
    )


def test_a_dropped_event_is_caught(study, trust, tmp_path) -> None:
    dropped = row(study, "query.approved", 1)  # usz's approval
    n = dropped.seq
    tamper(connection, "DELETE FROM audit_auditeventref WHERE event_id = %s", [dropped.pk])
    tamper(connection, "DELETE FROM audit_auditevent WHERE id = %s", [dropped.pk])
    assert_caught(
        exported(study, tmp_path),
        trust,
        f"events.jsonl line {n + 1} (event {n}) holds event {n + 1}: events are missing or out "
        "of order",
        study,
        f"event {n} is missing",
    )


def test_two_reordered_events_are_caught(study, trust, tmp_path) -> None:
    # An approval after the dispatch would pass a reader who trusted the rows' order.
    approval, dispatch = row(study, "query.approved", 1), row(study, "job.dispatched")
    a, d = approval.seq, dispatch.seq
    swap = "UPDATE audit_auditevent SET seq = %s WHERE id = %s"
    tamper(connection, swap, [10**9, approval.pk])
    tamper(connection, swap, [a, dispatch.pk])
    tamper(connection, swap, [d, approval.pk])
    assert_caught(
        exported(study, tmp_path),
        trust,
        f"events.jsonl line {a + 1} (event {a}) holds event {d}",
        study,
        f"event {a} says it is room/{study.pk} #{d}: events were reordered",
    )


def test_a_changed_attachment_is_caught(study, trust, tmp_path) -> None:
    sha = hashlib.sha256(SQL).hexdigest()
    tamper(
        connection,
        "UPDATE audit_auditattachment SET content = %s WHERE sha256 = %s",
        [b"SELECT * FROM charite.patients", sha],
    )
    assert_caught(
        exported(study, tmp_path),
        trust,
        f"attachments/{sha} does not match its name (its SHA-256)",
        study,
        f"attachment {sha} does not match its hash",
    )


def test_a_file_added_to_the_bundle_is_caught(study, trust, tmp_path) -> None:
    bundle = rewrite_zip(
        exported(study, tmp_path), tmp_path / "repacked.zip", add={"attachments/extra": b"planted"}
    )
    assert_caught(bundle, trust, "unexpected file attachments/extra in the bundle")
    # The platform's own check of a bundle is the same code, in-process.
    with pytest.raises(VerificationError, match="unexpected file attachments/extra"):
        verify_bundle(bundle, parse_trust_file(trust.read_text()))


def test_a_bundle_file_swapped_with_its_manifest_entry_updated_is_caught(
    study, trust, tmp_path
) -> None:
    original = exported(study, tmp_path)
    target = tmp_path / "swapped.zip"
    with zipfile.ZipFile(original) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            content = old.read(info.filename)
            if info.filename == "README.txt":
                content = b"Nothing to see here.\n"
            if info.filename == "MANIFEST.json":
                content = content.replace(
                    hashlib.sha256(old.read("README.txt")).hexdigest().encode(),
                    hashlib.sha256(b"Nothing to see here.\n").hexdigest().encode(),
                )
            new.writestr(info.filename, content)
    assert_caught(target, trust, "MANIFEST.json does not match the SHA-256 MANIFEST.sig signs")


def test_a_whole_history_re_signed_with_a_new_key_is_caught(study, trust, tmp_path) -> None:
    log = AuditLog.objects.get(name=log_of(study))
    old_checkpoint = tmp_path / "kept-by-the-regulator.txt"
    old_checkpoint.write_text(checkpoints.latest_checkpoint(log.name).note)
    # The operator wipes the room's history, swaps the log key and writes another history.
    for table in (
        "audit_cosignature",
        "audit_checkpoint",
        "audit_auditeventref",
        "audit_auditevent",
        "audit_auditnode",
    ):
        tamper(connection, _wipe_sql(table), [log.pk])
    tamper(
        connection, "UPDATE audit_auditlog SET size = 0, frontier = %s WHERE id = %s", [b"", log.pk]
    )
    LogKey.objects.update(retired_at=timezone.now())
    run = happy_run()
    run[-2][1]["receivers"] = ["org:3", "org:4"]  # the history the operator prefers
    run[2][1]["receivers"] = ["org:3", "org:4"]
    record_run(log.name, run)
    bundle = exported(study, tmp_path)
    assert_caught(
        bundle,
        trust,
        "MANIFEST.sig: note is not signed by any trusted key",
        study,
        "note is not signed by any trusted key",
    )
    # A regulator who (wrongly) also trusts the new key still has the checkpoint it kept.
    both = tmp_path / "both-keys.txt"
    both.write_text(trust.read_text() + LogKey.objects.get(retired_at=None).vkey + "\n")
    assert_caught(bundle, both, "does not extend the previous checkpoint", previous=old_checkpoint)
    # And the witness refuses to cosign the new history.
    checkpoints.sign_checkpoint(log.name)
    with pytest.raises(CommandError, match="does not verify"):
        call_command("witness", "--org", "charite", "--log", log.name, stdout=io.StringIO())


def test_a_history_re_signed_with_the_same_key_is_caught_by_a_kept_checkpoint_and_the_witness(
    study, trust, tmp_path
) -> None:
    log = AuditLog.objects.get(name=log_of(study))
    kept = tmp_path / "kept.txt"
    kept.write_text(checkpoints.latest_checkpoint(log.name).note)
    event = row(study, "query.approved")
    forged = bytes(event.canonical).replace(b'"organization":"org:1"', b'"organization":"org:5"')
    tamper(
        connection, "UPDATE audit_auditevent SET canonical = %s WHERE id = %s", [forged, event.pk]
    )
    rebuild_tree(log)
    tamper(connection, _wipe_sql("audit_cosignature"), [log.pk])
    tamper(connection, _wipe_sql("audit_checkpoint"), [log.pk])
    checkpoints.sign_checkpoint(log.name)  # the operator still holds the log key
    bundle = exported(study, tmp_path)
    assert_caught(bundle, trust, "does not extend the previous checkpoint", previous=kept)


def _wipe_sql(table: str) -> str:
    if table == "audit_cosignature":
        return (
            "DELETE FROM audit_cosignature WHERE checkpoint_id IN "
            "(SELECT id FROM audit_checkpoint WHERE log_id = %s)"
        )
    if table == "audit_auditeventref":
        return (
            "DELETE FROM audit_auditeventref WHERE event_id IN "
            "(SELECT id FROM audit_auditevent WHERE log_id = %s)"
        )
    return f"DELETE FROM {table} WHERE log_id = %s"  # noqa: S608 - our own table names


def rebuild_tree(log: AuditLog) -> None:
    """What a careful attacker does after editing events: recompute every node from them."""
    tamper(connection, "DELETE FROM audit_auditnode WHERE log_id = %s", [log.pk])
    frontier: list[bytes] = []
    rows = AuditEvent.objects.filter(log=log).order_by("seq").values_list("seq", "canonical")
    with connection.cursor() as cursor:
        for seq, canonical in rows:
            frontier, nodes = merkle.frontier_append(frontier, seq, leaf_hash(bytes(canonical)))
            for level, index, h in nodes:
                cursor.execute(
                    'INSERT INTO audit_auditnode (log_id, level, "index", hash) '
                    "VALUES (%s, %s, %s, %s)",
                    [log.pk, level, index, h],
                )
    tamper(
        connection,
        "UPDATE audit_auditlog SET frontier = %s WHERE id = %s",
        [merkle.join_frontier(frontier), log.pk],
    )
    assert Checkpoint.objects.filter(log=log).exists()
