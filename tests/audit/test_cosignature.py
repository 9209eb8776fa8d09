"""Witness cosignatures are C2SP tlog-cosignature `cosignature/v1` (Ed25519, timestamped): a test
vector made here from a fixed seed over the specification's example checkpoint, reproduced by
the witness's own code and verified by the shipped verifier."""

from __future__ import annotations

import base64
import hashlib
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cleanroom.audit import witness as witness_module
from cleanroom.audit.verifier import VerificationError
from cleanroom.audit.verifier.bundle import parse_trust_file
from cleanroom.audit.verifier.notes import cosigned_message, parse_cosigner_key, verify_cosignatures

# The example checkpoint of https://c2sp.org/tlog-cosignature and its timestamp.
CHECKPOINT = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
LOG_LINE = (
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2"
    "q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
)
TIMESTAMP = 1679315147
SPEC_COSIGNATURE = (
    "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIU"
    "BkBIfZ+qnA=="
)

# Ours: the seed is SHA-256("cleanroom cosignature/v1 test vector").
SEED = hashlib.sha256(b"cleanroom cosignature/v1 test vector").digest()
NAME = "witness.example.com/w1"
VKEY = "witness.example.com/w1+95d6bef2+BEVCMLEdiCvPEdIJzTS+IWDcpeoWLbjFF+lrxGwkagzr"
LINE = (
    "— witness.example.com/w1 lda+8gAAAABkGFDLmEqNzxulQSIpepvAq6F69uNRi2uOHNnmHyD5aEqphCifEvit3E"
    "sYlIYxpA3Se0Ls/I/9yXx3EGKLg+WT9ewgDw==\n"
)


def test_the_signed_message_is_the_specifications() -> None:
    assert cosigned_message(CHECKPOINT, TIMESTAMP) == (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )


def test_the_specifications_example_has_the_timestamped_layout() -> None:
    raw = base64.b64decode(SPEC_COSIGNATURE)
    assert len(raw) == 4 + 8 + 64
    assert int.from_bytes(raw[4:12], "big") == TIMESTAMP


def test_the_witness_reproduces_the_vector_and_the_verifier_accepts_it(isolated_storage) -> None:
    # The vector's seed as a signing key of the local key service, which the witness signs with.
    (isolated_storage / "keys").mkdir()
    (isolated_storage / "keys" / "sig-vector.key").write_bytes(SEED)
    public = Ed25519PrivateKey.from_private_bytes(SEED).public_key().public_bytes_raw()
    key_id = witness_module.cosigner_key_id(NAME, public)
    typed = base64.b64encode(bytes([0x04]) + public).decode()
    assert f"{NAME}+{key_id}+{typed}" == VKEY
    witness = SimpleNamespace(name=NAME, note_key_id=key_id, key_id="sig-vector")
    assert witness_module.cosignature_line(witness, CHECKPOINT, TIMESTAMP) == LINE

    note = CHECKPOINT + "\n" + LOG_LINE + LINE
    assert verify_cosignatures(note, [VKEY]) == {NAME: TIMESTAMP}
    assert parse_trust_file(f"{LOG_VKEY}\nwitness {VKEY}\n").witness_keys == [
        parse_cosigner_key(VKEY)
    ]


LOG_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"


@pytest.mark.parametrize(
    "change",
    [
        lambda raw: raw[:11] + bytes([raw[11] ^ 1]) + raw[12:],  # another timestamp
        lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]),  # another signature
    ],
    ids=["timestamp", "signature"],
)
def test_a_changed_timestamp_or_signature_is_refused(change) -> None:
    raw = base64.b64decode(LINE.split()[-1])
    forged = f"— {NAME} {base64.b64encode(change(raw)).decode()}\n"
    with pytest.raises(VerificationError, match=f"invalid cosignature by witness {NAME}"):
        verify_cosignatures(CHECKPOINT + "\n" + LOG_LINE + forged, [VKEY])


def test_another_checkpoint_or_a_signed_note_key_does_not_pass() -> None:
    other = CHECKPOINT.replace("20852163", "20852164")
    with pytest.raises(VerificationError, match="invalid cosignature"):
        verify_cosignatures(other + "\n" + LOG_LINE + LINE, [VKEY])
    # A type 0x01 (plain signed-note) key is not a witness key.
    with pytest.raises(VerificationError, match="cosignature/v1 key"):
        parse_cosigner_key(LOG_VKEY)
    # Lines by keys that are not trusted are ignored.
    assert verify_cosignatures(CHECKPOINT + "\n" + LOG_LINE, [VKEY]) == {}
