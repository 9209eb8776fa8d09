"""A log's Merkle tree as persisted in `AuditNode`: roots and proofs in O(log n) rows.

:func:`extend` builds the tree over events appended since it last ran (the checkpoint signer
calls it, so appends never touch the tree). Each root or proof computation runs twice over
:class:`~cleanroom.audit.merkle.MerkleTree`: first over a recording store to learn which nodes
it reads, then over those nodes fetched in one query. A root or proof of a million-event log
reads about 20 node rows and no event.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TypeVar

from django.db import connection, transaction
from django.db.models import Q

from cleanroom.audit import merkle
from cleanroom.audit.merkle import MerkleTree, RecordingHashStore
from cleanroom.audit.models import AuditEvent, AuditLog, AuditNode
from cleanroom.audit.verifier import VerificationError
from cleanroom.audit.verifier.merkle import leaf_hash

T = TypeVar("T")


class MissingNodes(LookupError):
    """The node table lacks nodes a computation needs: the log's tree is damaged."""


class TreeError(VerificationError):
    """The events do not fit the tree: one is missing or changed; the message names it."""


# The first key of the PostgreSQL advisory lock that serialises extensions of one log's tree
# (the second is the log's id). Appends never take it; they lock the head row, which an
# extension only locks for its final UPDATE.
_EXTEND_LOCK = 0x61756474  # "audt"
_BATCH = 20000


def extend(log_name: str) -> AuditLog | None:
    """Extend the stored tree of `log_name` over every event committed since; return the head.

    Each new event must be the next in sequence and still hash to the leaf hash written with
    it; otherwise nothing is stored and TreeError names the event. Returns None for an unknown
    log.
    """
    head = AuditLog.objects.filter(name=log_name).first()
    if head is None:
        return None
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_EXTEND_LOCK, head.pk])
        # Read again under the lock: another extension may have moved it.
        size, packed = AuditLog.objects.filter(pk=head.pk).values_list("size", "frontier").get()
        start, frontier = size, merkle.split_frontier(bytes(packed), size)
        rows = (
            AuditEvent.objects.filter(log=head, seq__gte=size)
            .order_by("seq")
            .values_list("seq", "canonical", "leaf_hash")
        )
        nodes: list[tuple[int, int, bytes]] = []
        for seq, canonical, stored in rows.iterator(chunk_size=2000):
            if seq != size:
                raise TreeError(f"{log_name}: event {size} is missing")
            leaf = leaf_hash(bytes(canonical))
            if stored is None or bytes(stored) != leaf:
                raise TreeError(f"{log_name}: event {seq} was changed after it was appended")
            frontier, new = merkle.frontier_append(frontier, size, leaf)
            nodes += new
            size += 1
            if len(nodes) >= _BATCH:
                _store_nodes(head.pk, nodes)
                nodes.clear()
        if size > start:
            _store_nodes(head.pk, nodes)
            AuditLog.objects.filter(pk=head.pk).update(
                size=size, frontier=merkle.join_frontier(frontier)
            )
    head.size, head.frontier = size, merkle.join_frontier(frontier)
    return head


class _FetchedStore:
    def __init__(self, nodes: dict[tuple[int, int], bytes]) -> None:
        self._nodes = nodes

    def get(self, level: int, index: int) -> bytes | None:
        return self._nodes.get((level, index))

    def put(self, level: int, index: int, value: bytes) -> None:
        raise TypeError("persisted nodes are written by extend() only")


def _store_nodes(log_id: int, nodes: list[tuple[int, int, bytes]]) -> None:
    if connection.vendor == "postgresql":
        # COPY: a million-event log gets its two million nodes in seconds, not minutes.
        table = AuditNode._meta.db_table
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(f'COPY {table} (log_id, level, "index", hash) FROM STDIN') as copy,
        ):
            for level, index, value in nodes:
                copy.write_row((log_id, level, index, value))
        return
    AuditNode.objects.bulk_create(
        [AuditNode(log_id=log_id, level=lv, index=i, hash=h) for lv, i, h in nodes]
    )


def fetch_nodes(log: AuditLog, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    by_level: dict[int, list[int]] = defaultdict(list)
    for level, index in keys:
        by_level[level].append(index)
    if not by_level:
        return {}
    condition = Q()
    for level, indices in by_level.items():
        condition |= Q(level=level, index__in=indices)
    rows = AuditNode.objects.filter(condition, log=log).values_list("level", "index", "hash")
    return {(level, index): bytes(h) for level, index, h in rows}


def _run(log: AuditLog, size: int, compute: Callable[[MerkleTree], T]) -> T:
    """Run `compute` on the tree of `log` at `size`, reading only the nodes it needs."""
    if size > log.size:
        raise ValueError(f"the tree of {log.name} covers {log.size} events, not {size}")
    recorder = RecordingHashStore()
    compute(MerkleTree(recorder, size))
    nodes = fetch_nodes(log, recorder.wanted)
    missing = recorder.wanted - nodes.keys()
    if missing:
        level, index = min(missing)
        raise MissingNodes(f"{log.name}: Merkle node ({level}, {index}) is missing")
    return compute(MerkleTree(_FetchedStore(nodes), size))


def root(log: AuditLog, size: int | None = None) -> bytes:
    size = log.size if size is None else size
    return _run(log, size, lambda tree: tree.root())


def inclusion_proof(log: AuditLog, index: int, size: int) -> list[bytes]:
    return _run(log, size, lambda tree: tree.inclusion_proof(index))


def inclusion_proofs(log: AuditLog, indices: Iterable[int], size: int) -> dict[int, list[bytes]]:
    """Proofs for many leaves against one tree size, fetched in one query."""
    wanted = sorted(set(indices))
    return _run(log, size, lambda tree: {i: tree.inclusion_proof(i) for i in wanted})


def consistency_proof(log: AuditLog, size1: int, size2: int) -> list[bytes]:
    return _run(log, size2, lambda tree: tree.consistency_proof(size1))


def leaf_hashes(log: AuditLog, start: int, stop: int) -> dict[int, bytes]:
    """The stored leaf hashes of events `start..stop-1`."""
    rows = AuditNode.objects.filter(log=log, level=0, index__gte=start, index__lt=stop).values_list(
        "index", "hash"
    )
    return {index: bytes(h) for index, h in rows}
