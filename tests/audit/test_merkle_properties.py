"""Property tests: generated proofs verify, and any single flipped bit is refused."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanroom.audit.merkle import MemoryHashStore, MerkleTree, consistency_proof, inclusion_proof
from cleanroom.audit.verifier import VerificationError
from cleanroom.audit.verifier.merkle import (
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

MAX_SIZE = 300
LEAVES = [leaf_hash(i.to_bytes(4, "big")) for i in range(MAX_SIZE)]
TREE = MerkleTree.from_leaf_hashes(LEAVES)
ROOTS = [root_from_leaf_hashes(LEAVES[:n]) for n in range(MAX_SIZE + 1)]

sizes = st.integers(min_value=1, max_value=MAX_SIZE)


@st.composite
def tree_positions(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(sizes)
    return draw(st.integers(0, size - 1)), size


@st.composite
def size_pairs(draw: st.DrawFn) -> tuple[int, int]:
    size2 = draw(sizes)
    return draw(st.integers(1, size2)), size2


def flip(value: bytes, bit: int) -> bytes:
    bit %= len(value) * 8
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@given(tree_positions())
def test_every_generated_inclusion_proof_verifies(position: tuple[int, int]) -> None:
    index, size = position
    proof = TREE.inclusion_proof(index, size)
    assert proof == inclusion_proof(LEAVES, index, size)
    verify_inclusion(LEAVES[index], index, size, proof, ROOTS[size])


@given(size_pairs())
def test_every_generated_consistency_proof_verifies(pair: tuple[int, int]) -> None:
    size1, size2 = pair
    proof = TREE.consistency_proof(size1, size2)
    assert proof == consistency_proof(LEAVES, size1, size2)
    verify_consistency(size1, size2, proof, ROOTS[size1], ROOTS[size2])


@given(tree_positions(), st.data())
def test_a_flipped_bit_in_an_inclusion_proof_leaf_or_root_is_refused(
    position: tuple[int, int], data: st.DataObject
) -> None:
    index, size = position
    proof = TREE.inclusion_proof(index, size)
    leaf, root = LEAVES[index], ROOTS[size]
    target = data.draw(st.integers(-2, len(proof) - 1), label="target")  # -2 leaf, -1 root
    bit = data.draw(st.integers(0, 255), label="bit")
    if target == -2:
        leaf = flip(leaf, bit)
    elif target == -1:
        root = flip(root, bit)
    else:
        proof[target] = flip(proof[target], bit)
    with pytest.raises(VerificationError):
        verify_inclusion(leaf, index, size, proof, root)


@given(size_pairs(), st.data())
def test_a_flipped_bit_in_a_consistency_proof_or_either_root_is_refused(
    pair: tuple[int, int], data: st.DataObject
) -> None:
    size1, size2 = pair
    proof = TREE.consistency_proof(size1, size2)
    root1, root2 = ROOTS[size1], ROOTS[size2]
    target = data.draw(st.integers(-2, len(proof) - 1), label="target")  # -2 root1, -1 root2
    bit = data.draw(st.integers(0, 255), label="bit")
    if target == -2:
        root1 = flip(root1, bit)
    elif target == -1:
        root2 = flip(root2, bit)
    else:
        proof[target] = flip(proof[target], bit)
    with pytest.raises(VerificationError):
        verify_consistency(size1, size2, proof, root1, root2)


@settings(max_examples=50)
@given(st.lists(st.binary(min_size=32, max_size=32), max_size=MAX_SIZE))
def test_the_incremental_root_equals_the_batch_root_at_every_size(leaves: list[bytes]) -> None:
    tree = MerkleTree()
    assert tree.root() == hashlib.sha256(b"").digest()
    for n, leaf in enumerate(leaves, start=1):
        tree.append(leaf)
        assert tree.root() == root_from_leaf_hashes(leaves[:n])
    # Past sizes stay reachable from the cached subtrees alone.
    assert [tree.root(n) for n in range(len(leaves) + 1)] == [
        root_from_leaf_hashes(leaves[:n]) for n in range(len(leaves) + 1)
    ]


@given(st.integers(0, MAX_SIZE - 1), st.integers(0, MAX_SIZE - 1))
def test_a_tree_reopened_over_its_store_carries_on_where_it_stopped(first: int, more: int) -> None:
    store = MemoryHashStore()
    MerkleTree(store).extend(LEAVES[:first])
    reopened = MerkleTree(store, size=first)
    reopened.extend(LEAVES[first : first + more])
    size = reopened.size
    assert reopened.root() == ROOTS[size]
    if size:
        assert reopened.inclusion_proof(size - 1) == TREE.inclusion_proof(size - 1, size)


def test_the_store_refuses_to_rewrite_a_node_with_another_hash() -> None:
    store = MemoryHashStore()
    store.put(0, 0, LEAVES[0])
    store.put(0, 0, LEAVES[0])  # idempotent
    with pytest.raises(ValueError, match="already stored"):
        store.put(0, 0, LEAVES[1])
    with pytest.raises(ValueError, match="gap"):
        store.put(0, 5, LEAVES[1])


def test_proofs_beyond_the_tree_or_from_an_empty_tree_are_not_generated() -> None:
    with pytest.raises(ValueError):
        TREE.inclusion_proof(0, MAX_SIZE + 1)
    with pytest.raises(ValueError):
        TREE.inclusion_proof(5, 5)
    with pytest.raises(ValueError):
        TREE.consistency_proof(0, 5)
    with pytest.raises(ValueError):
        TREE.consistency_proof(6, 5)
    assert TREE.consistency_proof(5, 5) == []


def test_a_leaf_of_the_wrong_length_is_not_appended() -> None:
    with pytest.raises(ValueError):
        MerkleTree().append(b"short")
