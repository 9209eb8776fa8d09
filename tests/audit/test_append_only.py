"""The audit table is append-only in the database itself, and every log's sequence numbers run
without gaps, whichever services write to it."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from cleanroom.audit import tree
from cleanroom.audit.log import PLATFORM_LOG, events_of, record_event, room_log_name
from cleanroom.audit.models import AuditEvent, AuditLog
from jobs.rooms.services import contribute_dataset, respond_to_invitation
from parties import services
from tests import factories

# Written out in the SQL below, so that the statements are plain literals.
assert AuditEvent._meta.db_table == "audit_auditevent"
on_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL-only: TRUNCATE and replication role"
)


def refused(sql: str, *params) -> str:
    """Run `sql` in a savepoint, expect the database to refuse it, return its message."""
    with pytest.raises(DatabaseError) as refusal, transaction.atomic(), connection.cursor() as c:
        c.execute(sql, params)
    return str(refusal.value)


def snapshot() -> list[tuple]:
    return list(
        AuditEvent.objects.order_by("pk").values_list(
            "pk", "log_id", "seq", "type", "canonical", "created_at"
        )
    )


@pytest.fixture
def events(world) -> list[tuple]:
    assert AuditEvent.objects.exists()
    return snapshot()


def test_raw_sql_update_of_an_event_is_refused(events):
    message = refused("UPDATE audit_auditevent SET type = %s", "tampered")
    assert "append-only" in message
    assert "UPDATE" in message
    assert snapshot() == events


def test_raw_sql_update_of_the_payload_is_refused(events):
    pk = events[0][0]
    assert "append-only" in refused(
        "UPDATE audit_auditevent SET canonical = %s WHERE id = %s", b"{}", pk
    )
    assert snapshot() == events


def test_raw_sql_delete_of_one_event_or_all_is_refused(events):
    pk = events[-1][0]
    assert "DELETE" in refused("DELETE FROM audit_auditevent WHERE id = %s", pk)
    assert "DELETE" in refused("DELETE FROM audit_auditevent")
    assert snapshot() == events


def test_orm_update_is_refused(events):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(type="organization.created").update(type="tampered")
    assert snapshot() == events


def test_orm_save_of_a_changed_event_is_refused(events):
    event = AuditEvent.objects.first()
    event.type = "tampered"
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        event.save()
    assert snapshot() == events


def test_orm_delete_of_a_queryset_and_of_one_event_is_refused(events):
    # Events indexed by reference are protected by their index rows before the database is
    # even asked; an event without references reaches the trigger.
    with transaction.atomic():
        bare = record_event(log="test/bare", type="probe", actor=None, subject="nothing")
    assert not bare.refs.exists()
    events = snapshot()
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.all().delete()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.get(pk=bare.pk).delete()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(log__name="test/bare").delete()
    assert snapshot() == events


def test_a_log_cannot_be_deleted_from_under_its_events(events):
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditLog.objects.filter(name=PLATFORM_LOG).delete()
    assert snapshot() == events


@on_postgres
def test_truncate_is_refused_on_postgresql(events):
    assert "TRUNCATE" in refused("TRUNCATE audit_auditevent")
    assert "TRUNCATE" in refused("TRUNCATE audit_auditevent CASCADE")
    assert snapshot() == events


@on_postgres
def test_replica_mode_does_not_bypass_the_triggers_on_postgresql(events):
    for statement in ("DELETE FROM audit_auditevent", "UPDATE audit_auditevent SET type = 'x'"):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute("SET LOCAL session_replication_role = replica")
            cursor.execute("SHOW session_replication_role")
            assert cursor.fetchone() == ("replica",)
            cursor.execute(statement)
    with connection.cursor() as cursor:
        cursor.execute("SHOW session_replication_role")
        assert cursor.fetchone() == ("origin",)
    assert snapshot() == events


def test_appending_still_works_after_a_refusal(events):
    refused("DELETE FROM audit_auditevent")
    with transaction.atomic():
        record_event(log="test/after", type="probe", actor=None, subject="test:1")
    assert [e["seq"] for e in events_of("test/after")] == [0]
    assert snapshot()[: len(events)] == events


# --- sequence numbers --------------------------------------------------------------------------


def test_sequence_numbers_are_gap_free_per_log_across_services(world, patients_csv, tmp_path):
    version = factories.dataset(world.charite, world.alice, patients_csv)
    services.update_policy(dataset=version.dataset, by=world.alice, min_group_size=15)
    carol_path = factories.patients_csv(tmp_path / "usz.csv", rows=30, seed=2)
    usz = factories.dataset(world.zurich, world.carol, carol_path, jurisdiction="CH")
    rooms = [world.room("cardio"), world.room("onco")]
    for room in rooms:
        membership = room.memberships.get(organization=world.zurich)
        respond_to_invitation(membership=membership, accept=True, by=world.carol)
        contribute_dataset(room=room, dataset=version.dataset, by=world.alice)
        contribute_dataset(room=room, dataset=usz.dataset, by=world.carol)
    services.add_dataset_version(
        dataset=version.dataset,
        upload=patients_csv,
        filename=patients_csv.name,
        schema=factories.patients_schema(),
        by=world.alice,
    )
    # A refused change writes nothing and leaves no gap.
    with pytest.raises(services.PolicyError):
        services.update_policy(dataset=version.dataset, by=world.alice, allowed_measures=["sex"])
    contribute_dataset(room=rooms[0], dataset=version.dataset, by=world.alice)

    logs = AuditLog.objects.order_by("name")
    assert {log.name for log in logs} >= {PLATFORM_LOG, *(room_log_name(r.pk) for r in rooms)}
    for log in logs:
        seqs = list(log.events.order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(len(seqs))), log.name
        assert tree.extend(log.name).size == len(seqs), log.name  # and the tree covers them
        assert [e["seq"] for e in events_of(log.name)] == seqs
    assert [e["type"] for e in events_of(room_log_name(rooms[0].pk))] == [
        "room.created",
        "room.invited",
        "room.joined",
        "room.dataset_contributed",
        "room.dataset_contributed",
        "room.dataset_contributed",
    ]
    platform = [e["type"] for e in events_of(PLATFORM_LOG)]
    assert platform.count("dataset.registered") == 2
    assert platform.count("policy.changed") == 1
    assert platform[-1] == "dataset.version_added"


def test_each_event_carries_its_log_and_sequence_number_in_its_canonical_form(world):
    for log in AuditLog.objects.all():
        for seq, event in enumerate(events_of(log.name)):
            assert (event["log"], event["seq"]) == (log.name, seq)


# --- outside a transaction ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_recording_an_event_outside_a_transaction_is_refused():
    assert not connection.in_atomic_block
    with pytest.raises(RuntimeError, match="same transaction as their change"):
        record_event(log=PLATFORM_LOG, type="probe", actor=None, subject="test:1")
    assert not AuditEvent.objects.exists()
    assert not AuditLog.objects.filter(name=PLATFORM_LOG).exists()


@pytest.mark.django_db(transaction=True)
def test_a_change_that_fails_after_its_event_takes_the_event_with_it():
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        record_event(log="test/rollback", type="probe", actor=None, subject="test:1")
        1 / 0  # noqa: B018
    assert events_of("test/rollback") == []
    with transaction.atomic():
        record_event(log="test/rollback", type="probe", actor=None, subject="test:2")
    assert [(e["seq"], e["subject"]) for e in events_of("test/rollback")] == [(0, "test:2")]
