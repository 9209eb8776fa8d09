"""RFC 9162 section 2.1 Merkle trees: leaf and node hashes, roots, and the verification of
inclusion and consistency proofs (the platform builds them: cleanroom/audit/merkle.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from . import VerificationError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """MTH of a single entry: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_of_subtrees(hashes: Sequence[bytes]) -> bytes:
    """The root of a tree from the hashes of its maximal complete subtrees, left to right (its
    compact range: one per 1-bit of its size, largest first), folded from the right."""
    if not hashes:
        return EMPTY_ROOT
    root = hashes[-1]
    for left in reversed(hashes[:-1]):
        root = node_hash(left, root)
    return root


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """Root hash of the tree whose leaves have the given hashes (RFC 9162 MTH), in O(n) time and
    O(log n) memory (:class:`CompactRange`)."""
    tree = CompactRange()
    for h in hashes:
        tree.append(h)
    return tree.root()


def _check_proof_elements(proof: Sequence[bytes]) -> None:
    for i, p in enumerate(proof):
        if len(p) != HASH_SIZE:
            raise VerificationError(f"proof element {i} is {len(p)} bytes, expected {HASH_SIZE}")


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    Follows RFC 9162 section 2.1.3.2 step by step. Raises VerificationError on failure.
    """
    if index < 0 or size < 0:
        raise VerificationError("index and size must be non-negative")
    if index >= size:
        raise VerificationError(f"leaf index {index} is not below tree size {size}")
    # Without these a malformed (e.g. empty) leaf could "match" an equally malformed root.
    if len(leaf_hash) != HASH_SIZE:
        raise VerificationError(f"leaf hash is {len(leaf_hash)} bytes, expected {HASH_SIZE}")
    if len(root) != HASH_SIZE:
        raise VerificationError(f"root is {len(root)} bytes, expected {HASH_SIZE}")
    _check_proof_elements(proof)
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise VerificationError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                # We are on the right border: skip levels where this node has no sibling.
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("inclusion proof is too short")
    if r != root:
        raise VerificationError("inclusion proof does not lead to the given root")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree (size1, root1) is a prefix of the tree (size2, root2).

    Follows RFC 9162 section 2.1.4.2. A size1 of 0 is refused: an empty tree is trivially a
    prefix of anything, so such a "proof" proves nothing and is more likely a caller bug.
    Raises VerificationError on failure.
    """
    if size1 < 0 or size2 < 0:
        raise VerificationError("sizes must be non-negative")
    if size1 == 0:
        raise VerificationError("consistency with an empty tree (size1 = 0) proves nothing")
    if size1 > size2:
        raise VerificationError(f"size1 {size1} is greater than size2 {size2}")
    if size1 == size2:
        if proof:
            raise VerificationError("sizes are equal, so the proof must be empty")
        if root1 != root2:
            raise VerificationError("sizes are equal but the roots differ")
        return
    if not proof:
        raise VerificationError("consistency proof is empty")
    _check_proof_elements(proof)

    path = list(proof)
    # If the old tree is a complete subtree, its root is the first node of the path and the
    # proof omits it; put it back so both roots are rebuilt from the same starting node.
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("consistency proof is too short")
    if fr != root1:
        raise VerificationError("consistency proof does not lead to root1")
    if sr != root2:
        raise VerificationError("consistency proof does not lead to root2")


class CompactRange:
    """The right edge of an RFC 9162 tree being built leaf by leaf: O(log n) hashes."""

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[bytes] = []

    def append(self, leaf: bytes) -> None:
        self.size += 1
        self._stack.append(leaf)
        # Each trailing 0-bit of the new size means two equal-size subtrees have just been
        # completed side by side and must be merged.
        count = self.size
        while count & 1 == 0:
            right = self._stack.pop()
            self._stack.append(node_hash(self._stack.pop(), right))
            count >>= 1

    def root(self) -> bytes:
        return root_of_subtrees(self._stack)
