"""Golden RFC 6962 / RFC 9162 vectors (transparency-dev/merkle testdata, Apache-2.0)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from cleanroom.audit.merkle import MerkleTree, consistency_proof, inclusion_proof
from cleanroom.audit.verifier import VerificationError
from cleanroom.audit.verifier.merkle import (
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parent.parent / "fixtures" / "merkle"
INCLUSION_FILES = sorted((VECTORS / "inclusion").rglob("*.json"))
CONSISTENCY_FILES = sorted((VECTORS / "consistency").rglob("*.json"))

# The eight RFC 6962 test leaves (hex-encoded entry bytes) and the roots of their prefixes.
RFC6962_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
RFC6962_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
RFC6962_LEAF_HASHES = [leaf_hash(d) for d in RFC6962_LEAVES]


def _id(path: Path) -> str:
    return path.relative_to(VECTORS).with_suffix("").as_posix()


def _load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    data["proof"] = [base64.b64decode(p) for p in data["proof"] or []]
    for key in ("root", "leafHash", "root1", "root2"):
        if key in data:
            data[key] = base64.b64decode(data[key])
    return data


def test_the_vector_files_are_all_there() -> None:
    assert len(INCLUSION_FILES) == 98
    assert len(CONSISTENCY_FILES) == 98


@pytest.mark.parametrize("path", INCLUSION_FILES, ids=_id)
def test_an_inclusion_vector_is_accepted_or_refused_as_expected(path: Path) -> None:
    v = _load(path)
    args = (v["leafHash"], v["leafIdx"], v["treeSize"], v["proof"], v["root"])
    if v["wantErr"]:
        with pytest.raises(VerificationError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", CONSISTENCY_FILES, ids=_id)
def test_a_consistency_vector_is_accepted_or_refused_as_expected(path: Path) -> None:
    v = _load(path)
    args = (v["size1"], v["size2"], v["proof"], v["root1"], v["root2"])
    if v["wantErr"]:
        with pytest.raises(VerificationError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


@pytest.mark.parametrize("n", range(9))
def test_the_standard_root_of_the_first_n_test_leaves_is_reproduced(n: int) -> None:
    assert root_from_leaf_hashes(RFC6962_LEAF_HASHES[:n]).hex() == RFC6962_ROOTS[n]
    assert MerkleTree.from_leaf_hashes(RFC6962_LEAF_HASHES[:n]).root().hex() == RFC6962_ROOTS[n]


def test_the_incremental_tree_gives_every_past_standard_root() -> None:
    tree = MerkleTree.from_leaf_hashes(RFC6962_LEAF_HASHES)
    assert [tree.root(n).hex() for n in range(9)] == RFC6962_ROOTS


HAPPY_INCLUSION = [p for p in INCLUSION_FILES if p.name == "happy-path.json"]
HAPPY_CONSISTENCY = [p for p in CONSISTENCY_FILES if p.name == "happy-path.json"]


@pytest.mark.parametrize("path", HAPPY_INCLUSION, ids=_id)
def test_a_generated_inclusion_proof_equals_the_golden_one(path: Path) -> None:
    # The happy vectors are all drawn from the eight standard leaves.
    v = _load(path)
    tree = MerkleTree.from_leaf_hashes(RFC6962_LEAF_HASHES)
    assert tree.root(v["treeSize"]) == v["root"]
    assert tree.inclusion_proof(v["leafIdx"], v["treeSize"]) == v["proof"]
    assert inclusion_proof(RFC6962_LEAF_HASHES, v["leafIdx"], v["treeSize"]) == v["proof"]


@pytest.mark.parametrize("path", HAPPY_CONSISTENCY, ids=_id)
def test_a_generated_consistency_proof_equals_the_golden_one(path: Path) -> None:
    v = _load(path)
    tree = MerkleTree.from_leaf_hashes(RFC6962_LEAF_HASHES)
    assert tree.consistency_proof(v["size1"], v["size2"]) == v["proof"]
    assert consistency_proof(RFC6962_LEAF_HASHES, v["size1"], v["size2"]) == v["proof"]
