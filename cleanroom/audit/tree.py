"""A log's Merkle tree as persisted in `AuditNode`: roots and proofs in O(log n) rows.

Each computation runs twice over :class:`~cleanroom.audit.merkle.MerkleTree`: first over a
recording store to learn which nodes it reads, then over those nodes fetched in one query. A
root or proof of a million-event log reads about 20 node rows and no event.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TypeVar

from django.db.models import Q

from cleanroom.audit.merkle import MerkleTree, RecordingHashStore
from cleanroom.audit.models import AuditLog, AuditNode

T = TypeVar("T")


class MissingNodes(LookupError):
    """The node table lacks nodes a computation needs: the log's tree is damaged."""


class _FetchedStore:
    def __init__(self, nodes: dict[tuple[int, int], bytes]) -> None:
        self._nodes = nodes

    def get(self, level: int, index: int) -> bytes | None:
        return self._nodes.get((level, index))

    def put(self, level: int, index: int, value: bytes) -> None:
        raise TypeError("persisted nodes are written by record_event only")


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
        raise ValueError(f"{log.name} has {log.size} events, not {size}")
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
