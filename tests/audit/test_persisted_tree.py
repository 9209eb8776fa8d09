"""The persisted Merkle tree: an append writes its event and leaf hash and touches no node; the
tree is extended from the events by the checkpoint signer and read in O(log n) rows."""

from __future__ import annotations

import json
import re
import threading

import pytest
from django.db import connection, connections, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.utils import DatabaseError
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from cleanroom.audit import tree
from cleanroom.audit.log import record_event, record_events
from cleanroom.audit.merkle import MerkleTree, frontier_append, frontier_root
from cleanroom.audit.models import AuditEvent, AuditEventRef, AuditLog, AuditNode
from cleanroom.audit.verifier.canonical import canonical_json
from cleanroom.audit.verifier.merkle import (
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)


def append(log: str, n: int, **data) -> None:
    for i in range(n):
        with transaction.atomic():
            record_event(log=log, type="test.event", actor=None, subject=f"job:{i}", data=data)


def leaves_of(log: str) -> list[bytes]:
    return [
        leaf_hash(bytes(c))
        for c in AuditEvent.objects.filter(log__name=log)
        .order_by("seq")
        .values_list("canonical", flat=True)
    ]


def tree_root_of(log: str) -> bytes:
    return root_from_leaf_hashes(leaves_of(log))


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=200))
def test_the_compact_range_completes_the_same_nodes_and_root_as_the_full_tree(leaves) -> None:
    full = MerkleTree()
    frontier: list[bytes] = []
    for i, leaf in enumerate(leaves):
        frontier, nodes = frontier_append(frontier, i, leaf)
        full.append(leaf)
        for level, index, h in nodes:
            assert full.store.get(level, index) == h
        assert frontier_root(frontier) == full.root()
    assert frontier_root(frontier) == root_from_leaf_hashes(leaves)


@pytest.mark.django_db
def test_the_extended_tree_gives_each_past_root_of_its_events() -> None:
    append("room/1", 30)
    tree.extend("room/1")
    append("room/1", 7)  # extended again from where it stopped
    head = tree.extend("room/1")
    leaves = leaves_of("room/1")
    assert head.size == 37
    for size in range(38):
        assert tree.root(head, size) == root_from_leaf_hashes(leaves[:size])
    # Level 0 holds exactly the events' leaf hashes.
    assert tree.leaf_hashes(head, 0, 37) == dict(enumerate(leaves))


@pytest.mark.django_db
def test_inclusion_and_consistency_proofs_from_stored_nodes_verify_against_event_roots() -> None:
    append("room/2", 21)
    head = tree.extend("room/2")
    leaves = leaves_of("room/2")
    for size in (1, 2, 7, 8, 13, 21):
        root = root_from_leaf_hashes(leaves[:size])
        for index in range(size):
            verify_inclusion(
                leaves[index], index, size, tree.inclusion_proof(head, index, size), root
            )
        for size1 in range(1, size + 1):
            proof = tree.consistency_proof(head, size1, size)
            verify_consistency(size1, size, proof, root_from_leaf_hashes(leaves[:size1]), root)
    proofs = tree.inclusion_proofs(head, [0, 5, 20], 21)
    assert proofs[5] == tree.inclusion_proof(head, 5, 21)


@pytest.mark.django_db
def test_a_root_or_proof_of_a_long_log_reads_a_few_node_rows_in_one_query() -> None:
    append("room/3", 1000)
    head = tree.extend("room/3")
    with CaptureQueriesContext(connection) as queries:
        root = tree.root(head)
        proof = tree.inclusion_proof(head, 617, 1000)
    assert len(queries) == 2
    assert "audit_auditevent" not in " ".join(q["sql"] for q in queries)
    # 1000 = 0b1111101000: six complete subtrees make the root; a proof has ~log2(n) nodes.
    assert len(proof) == 10
    verify_inclusion(leaves_of("room/3")[617], 617, 1000, proof, root)


@pytest.mark.django_db
def test_an_append_writes_its_event_and_leaf_hash_and_neither_nodes_nor_the_head() -> None:
    append("room/4", 15)  # 0b1111: the next event closes four levels at once
    tree.extend("room/4")
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        event = record_event(log="room/4", type="test.event", actor=None, subject="job:1")
    statements = " ".join(q["sql"] for q in queries)
    assert "audit_auditnode" not in statements
    assert not re.search(r'UPDATE "?audit_auditlog', statements)
    assert bytes(AuditEvent.objects.get(pk=event.pk).leaf_hash) == leaf_hash(event.canonical)
    assert not AuditNode.objects.filter(log__name="room/4", level=4).exists()
    head = tree.extend("room/4")  # the signer's extension closes them
    assert head.size == 16
    assert AuditNode.objects.filter(log__name="room/4", level=4).count() == 1
    assert frontier_root([bytes(head.frontier)]) == tree.root(head) == tree_root_of("room/4")


@pytest.mark.django_db
def test_the_stable_ids_an_event_names_are_indexed_with_where_they_appear() -> None:
    with transaction.atomic():
        event = record_event(
            log="room/5",
            type="query.submitted",
            actor="user:1",
            subject="room:5",
            data={
                "query": "query:9",
                "datasets": [{"dataset": "dataset:3", "owner": "org:2"}],
                "receivers": ["org:4"],
                "purpose": "org:not-an-id because of the space",
            },
        )
    assert set(AuditEventRef.objects.filter(event=event).values_list("key", "ref")) == {
        ("subject", "room:5"),
        ("query", "query:9"),
        ("datasets", "dataset:3"),
        ("datasets", "org:2"),
        ("receivers", "org:4"),
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_auditnode SET hash = hash",
        "DELETE FROM audit_auditnode",
        "UPDATE audit_auditeventref SET ref = 'org:1'",
        "DELETE FROM audit_auditeventref",
    ],
)
def test_the_database_refuses_to_change_stored_nodes_or_the_id_index(statement: str) -> None:
    append("room/6", 3)
    tree.extend("room/6")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        connection.cursor().execute(statement)
    assert (
        AuditNode.objects.filter(log__name="room/6").count() == 4
    )  # 3 leaves + the node over the first two


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_get_gap_free_sequence_numbers_and_one_consistent_tree() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the in-memory SQLite test database fails concurrent writers outright")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            append("room/7", 15, writer=n)
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    head = tree.extend("room/7")
    seqs = list(AuditEvent.objects.filter(log=head).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(120))
    assert tree.root(head) == root_from_leaf_hashes(leaves_of("room/7"))


@pytest.mark.django_db(transaction=True)
def test_migrating_gives_logs_written_before_the_tree_their_nodes_range_and_index() -> None:
    executor = MigrationExecutor(connection)
    before, after = [("audit", "0002_append_only_events")], executor.loader.graph.leaf_nodes()
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps
        OldLog, OldEvent = old.get_model("audit", "AuditLog"), old.get_model("audit", "AuditEvent")
        log = OldLog.objects.create(name="room/8", size=5)
        for seq in range(5):
            body = {
                "log": "room/8",
                "seq": seq,
                "time": "2026-01-01T00:00:00.000000Z",
                "type": "room.joined",
                "actor": None,
                "subject": "room:8",
                "data": {"organization": f"org:{seq}"},
                "attachments": [],
            }
            OldEvent.objects.create(
                log=log,
                seq=seq,
                type="room.joined",
                canonical=canonical_json(body),
                created_at=timezone.now(),
            )
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(after)
    head = AuditLog.objects.get(name="room/8")
    assert tree.root(head) == root_from_leaf_hashes(leaves_of("room/8"))
    assert AuditEventRef.objects.filter(event__log=head, key="organization").count() == 5
    with transaction.atomic():  # and appends carry on from the backfilled range
        record_event(log="room/8", type="room.joined", actor=None, subject="room:8")
    head = tree.extend("room/8")
    assert tree.root(head) == root_from_leaf_hashes(leaves_of("room/8"))


@pytest.mark.django_db
def test_a_bulk_append_numbers_on_from_the_log_and_its_tree_is_built_like_any_other() -> None:
    append("room/9", 3)
    with transaction.atomic():
        first = record_events(
            log="room/9",
            events=[
                {"type": "test.event", "actor": None, "subject": f"job:{i}", "data": {"n": i}}
                for i in range(40)
            ],
        )
    append("room/9", 2)
    assert first == 3
    bodies = [json.loads(bytes(c)) for c in AuditEvent.objects.filter(log__name="room/9")
              .order_by("seq").values_list("canonical", flat=True)]  # fmt: skip
    assert [b["seq"] for b in bodies] == list(range(45))
    assert bodies[3]["data"] == {"n": 0} and bodies[3]["subject"] == "job:0"
    head = tree.extend("room/9")
    assert head.size == 45
    assert tree.root(head) == tree_root_of("room/9")
    assert AuditEventRef.objects.filter(event__log=head, ref="job:39").count() == 1
