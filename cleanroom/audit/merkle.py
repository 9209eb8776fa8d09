"""Generation side of the RFC 9162 Merkle tree: incremental roots and proofs.

A log's tree is addressed by nodes ``(level, index)``: level 0 holds the leaf hashes and node
``(level, index)`` is the root of the *complete* subtree over leaves
``[index * 2**level, (index + 1) * 2**level)``. Complete subtrees never change once the log has
grown past them, so their hashes can be cached (and persisted) forever; the hash of any tree
size, and any proof, is then assembled from O(log n) of them.

Storage sits behind :class:`HashStore` (``get``/``put`` by ``(level, index)``) so the Django
layer can persist nodes in a table, in the same transaction as the event they cover.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from cleanroom.audit.verifier.merkle import (
    HASH_SIZE,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    root_of_subtrees,
)

__all__ = [
    "HashStore",
    "MemoryHashStore",
    "MerkleTree",
    "RecordingHashStore",
    "consistency_proof",
    "frontier_append",
    "frontier_root",
    "inclusion_proof",
    "join_frontier",
    "split_frontier",
]

# (begin, size) -> hash of the RFC 9162 subtree over leaves [begin, begin + size).
SubtreeHash = Callable[[int, int], bytes]


class HashStore(Protocol):
    """Where the hashes of complete subtrees live. Nodes are write-once."""

    def get(self, level: int, index: int) -> bytes | None:
        """The hash of node ``(level, index)``, or None if it has not been stored."""
        ...

    def put(self, level: int, index: int, value: bytes) -> None:
        """Store node ``(level, index)``. Storing a different value twice is an error."""
        ...


class MemoryHashStore:
    """In-memory :class:`HashStore`: one list per level.

    Lists rather than a ``{(level, index): hash}`` dict, because nodes of a level are always
    written in index order, and a million-leaf log then costs ~150 MB instead of ~400 MB.
    """

    def __init__(self) -> None:
        self._levels: list[list[bytes]] = []

    def get(self, level: int, index: int) -> bytes | None:
        if level < len(self._levels) and 0 <= index < len(self._levels[level]):
            return self._levels[level][index]
        return None

    def put(self, level: int, index: int, value: bytes) -> None:
        while len(self._levels) <= level:
            self._levels.append([])
        row = self._levels[level]
        if index == len(row):
            row.append(value)
        elif 0 <= index < len(row):
            # Rewriting a stored node with a different hash would be rewriting history.
            if row[index] != value:
                raise ValueError(f"node ({level}, {index}) is already stored with another hash")
        else:
            raise ValueError(f"node ({level}, {index}) would leave a gap (level has {len(row)})")


class RecordingHashStore:
    """A store that answers every lookup with a placeholder and remembers what was asked.

    Which nodes a root or proof needs depends only on the sizes and indices involved, never on
    the hash values, so running the computation once over this store lists every node it reads;
    a database-backed caller then fetches exactly those in one query and runs it again.
    """

    PLACEHOLDER = bytes(HASH_SIZE)

    def __init__(self) -> None:
        self.wanted: set[tuple[int, int]] = set()

    def get(self, level: int, index: int) -> bytes | None:
        self.wanted.add((level, index))
        return self.PLACEHOLDER

    def put(self, level: int, index: int, value: bytes) -> None:
        raise TypeError("a recording store is read-only")


class MerkleTree:
    """An append-only RFC 9162 tree over leaf hashes, caching complete subtrees in a store.

    - ``append`` is amortised O(1) hashes (worst case O(log n));
    - ``root(size)`` for any past or current size is O(log n) lookups and hashes;
    - ``inclusion_proof`` and ``consistency_proof`` are O(log n) lookups and hashes.

    The tree size is not kept in the store: a persistent caller records it with the events and
    passes it back in when reopening the tree.
    """

    def __init__(self, store: HashStore | None = None, size: int = 0) -> None:
        if size < 0:
            raise ValueError("size must be non-negative")
        self._store: HashStore = store if store is not None else MemoryHashStore()
        self._size = size

    @classmethod
    def from_leaf_hashes(
        cls, hashes: Iterable[bytes], store: HashStore | None = None
    ) -> MerkleTree:
        tree = cls(store)
        tree.extend(hashes)
        return tree

    @property
    def size(self) -> int:
        return self._size

    @property
    def store(self) -> HashStore:
        return self._store

    def __len__(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> int:
        """Append a leaf *hash*; return its index."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes, got {len(leaf)}")
        index = self._size
        self._store.put(0, index, leaf)
        # Every trailing 1-bit of the index closes a complete subtree one level up.
        level, i, h = 0, index, leaf
        while i & 1:
            h = node_hash(self._node(level, i - 1), h)
            level += 1
            i >>= 1
            self._store.put(level, i, h)
        self._size = index + 1
        return index

    def append_entry(self, data: bytes) -> int:
        """Append a leaf given as entry bytes (hashed with the 0x00 prefix); return its index."""
        return self.append(leaf_hash(data))

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def leaf_hash(self, index: int) -> bytes:
        self._check_size(index + 1)
        return self._node(0, index)

    def root(self, size: int | None = None) -> bytes:
        """Root hash of the tree at ``size`` (default: the current size)."""
        size = self._size if size is None else size
        self._check_size(size)
        return self._subtree(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        size = self._size if size is None else size
        self._check_size(size)
        return _inclusion(self._subtree, index, size)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        size2 = self._size if size2 is None else size2
        self._check_size(size2)
        return _consistency(self._subtree, size1, size2)

    # -- internals ------------------------------------------------------------------------

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self._size:
            raise ValueError(f"size {size} is outside the tree (0..{self._size})")

    def _node(self, level: int, index: int) -> bytes:
        value = self._store.get(level, index)
        if value is None:
            raise LookupError(f"node ({level}, {index}) is missing from the hash store")
        return value

    def _subtree(self, begin: int, size: int) -> bytes:
        # Hash of the RFC 9162 subtree over [begin, begin + size). Such subtrees always start
        # at a multiple of their largest power of two, so they split into complete subtrees
        # of decreasing size (the 1-bits of `size`), combined right to left.
        parts: list[bytes] = []
        pos = begin
        for level in reversed(range(size.bit_length())):
            if size >> level & 1:
                parts.append(self._node(level, pos >> level))
                pos += 1 << level
        return root_of_subtrees(parts)


# ---------------------------------------------------------------------------------------------
# Proof construction (RFC 9162 sections 2.1.3.1 and 2.1.4.1), over any subtree-hash oracle
# ---------------------------------------------------------------------------------------------


def _largest_power_of_two_below(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def _inclusion(subtree: SubtreeHash, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]), unrolled: walk down from the root, collecting siblings."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not below tree size {size}")
    path: list[bytes] = []
    begin, m, n = 0, index, size
    while n > 1:
        k = _largest_power_of_two_below(n)
        if m < k:
            path.append(subtree(begin + k, n - k))
            n = k
        else:
            path.append(subtree(begin, k))
            begin, m, n = begin + k, m - k, n - k
    path.reverse()  # the proof lists siblings from the leaf upwards
    return path


def _consistency(subtree: SubtreeHash, size1: int, size2: int) -> list[bytes]:
    """PROOF(size1, D[0:size2]) = SUBPROOF(size1, D[0:size2], true), unrolled."""
    if size1 <= 0:
        raise ValueError("a consistency proof needs size1 > 0")
    if size1 > size2:
        raise ValueError(f"size1 {size1} is greater than size2 {size2}")
    path: list[bytes] = []
    begin, m, n = 0, size1, size2
    whole_old_tree = True  # the `b` flag: still on the old tree's own root path
    while m != n:
        k = _largest_power_of_two_below(n)
        if m <= k:
            path.append(subtree(begin + k, n - k))
            n = k
        else:
            path.append(subtree(begin, k))
            begin, m, n = begin + k, m - k, n - k
            whole_old_tree = False
    if not whole_old_tree:
        path.append(subtree(begin, n))
    path.reverse()
    return path


def _oracle(source: MerkleTree | Sequence[bytes], size: int) -> SubtreeHash:
    if isinstance(source, MerkleTree):
        source._check_size(size)
        return source._subtree
    if size > len(source):
        raise ValueError(f"size {size} is larger than the {len(source)} leaf hashes given")
    # A plain list: recompute each subtree from its leaves (O(n) per proof, for small logs).
    return lambda begin, n: root_from_leaf_hashes(source[begin : begin + n])


def inclusion_proof(source: MerkleTree | Sequence[bytes], index: int, size: int) -> list[bytes]:
    """Inclusion proof for leaf ``index`` in the tree of the first ``size`` leaves.

    ``source`` is a :class:`MerkleTree` or a sequence of leaf hashes.
    """
    return _inclusion(_oracle(source, size), index, size)


def consistency_proof(source: MerkleTree | Sequence[bytes], size1: int, size2: int) -> list[bytes]:
    """Consistency proof from the tree of ``size1`` leaves to the tree of ``size2`` leaves."""
    return _consistency(_oracle(source, size2), size1, size2)


# ---------------------------------------------------------------------------------------------
# The compact range ("frontier") of a log: enough state to append without reading any node
# ---------------------------------------------------------------------------------------------
#
# The frontier of a tree of `size` leaves is the list of hashes of its maximal complete
# subtrees, left to right: one per 1-bit of `size`, from the highest bit down. Its fold from the
# right is the root; appending a leaf merges it with the frontier's trailing subtrees exactly
# like a binary counter carries. A log keeps its frontier in its head row, so an append reads
# nothing but that row and writes the leaf and the nodes it completes.


def split_frontier(packed: bytes, size: int) -> list[bytes]:
    """Unpack a frontier stored as concatenated hashes, checking it fits the tree size."""
    if len(packed) % HASH_SIZE:
        raise ValueError("a packed frontier is a whole number of hashes")
    hashes = [packed[i : i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE)]
    if len(hashes) != size.bit_count():
        raise ValueError(
            f"a tree of {size} leaves has {size.bit_count()} frontier hashes, not {len(hashes)}"
        )
    return hashes


def join_frontier(frontier: Sequence[bytes]) -> bytes:
    return b"".join(frontier)


def frontier_root(frontier: Sequence[bytes]) -> bytes:
    """The root hash of the tree whose frontier this is."""
    return root_of_subtrees(frontier)


def frontier_append(
    frontier: Sequence[bytes], size: int, leaf: bytes
) -> tuple[list[bytes], list[tuple[int, int, bytes]]]:
    """Append leaf hash ``leaf`` as leaf ``size``.

    Returns the new frontier and the nodes ``(level, index, hash)`` the append completes: the
    leaf itself, then one node per level it closes (the same nodes :meth:`MerkleTree.append`
    stores).
    """
    if len(leaf) != HASH_SIZE:
        raise ValueError(f"leaf hash must be {HASH_SIZE} bytes, got {len(leaf)}")
    if len(frontier) != size.bit_count():
        raise ValueError("frontier does not match the tree size")
    stack = list(frontier)
    nodes = [(0, size, leaf)]
    level, i, h = 0, size, leaf
    while i & 1:
        h = node_hash(stack.pop(), h)
        level += 1
        i >>= 1
        nodes.append((level, i, h))
    stack.append(h)
    return stack, nodes
