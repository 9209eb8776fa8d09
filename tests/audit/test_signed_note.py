"""C2SP signed notes, tlog checkpoints and canonical JSON."""

from __future__ import annotations

import base64
import hashlib
from decimal import Decimal

import pytest

from cleanroom.audit.merkle import MerkleTree
from cleanroom.audit.notes import (
    Signer,
    cosign,
    format_checkpoint,
    generate_key,
    parse_signer_key,
    sign_note,
)
from cleanroom.audit.verifier import VerificationError
from cleanroom.audit.verifier.canonical import canonical_json
from cleanroom.audit.verifier.merkle import leaf_hash
from cleanroom.audit.verifier.notes import (
    Checkpoint,
    parse_checkpoint,
    parse_verifier_key,
    verify_checkpoint,
    verify_note,
)

# golang.org/x/mod/sumdb/note test vector.
VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
SIG_LINE = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdn"
    "gotpRZb6KE6RyyBwJnAM="
)
NOTE = TEXT + "\n" + SIG_LINE + "\n"

LOG = Signer.from_seed("log.example/room-1", bytes(range(32)))
WITNESS = Signer.from_seed("witness.example/acme", bytes(range(32, 64)))


def _resign(note: str, line_index: int, mutate) -> str:
    """Re-encode one signature line of ``note`` after mutating its raw (keyid || sig) bytes."""
    text, _, block = note.rpartition("\n\n")
    lines = block.splitlines()
    name, b64 = lines[line_index][2:].split(" ")
    raw = mutate(base64.b64decode(b64))
    lines[line_index] = f"\u2014 {name} {base64.b64encode(raw).decode()}"
    return text + "\n\n" + "\n".join(lines) + "\n"


def _flip_last_byte(raw: bytes) -> bytes:
    return raw[:-1] + bytes([raw[-1] ^ 1])


# -- the golden vector ----------------------------------------------------------------------------


def test_signing_with_the_golden_signer_key_reproduces_the_golden_signature_line() -> None:
    signer = parse_signer_key(SKEY)
    assert signer.name == "PeterNeumann"
    assert signer.key_id.hex() == "c74f20a3"
    assert signer.signer_key == SKEY
    assert signer.verifier_key == VKEY
    assert sign_note(TEXT, signer) == NOTE


def test_the_golden_note_verifies_with_the_golden_verifier_key() -> None:
    assert verify_note(NOTE, [VKEY]) == (TEXT, ["PeterNeumann"])
    assert verify_note(NOTE.encode(), [parse_verifier_key(VKEY)]) == (TEXT, ["PeterNeumann"])


def test_the_key_id_is_the_truncated_hash_of_name_newline_type_and_public_key() -> None:
    signer = parse_signer_key(SKEY)
    digest = hashlib.sha256(b"PeterNeumann\n\x01" + signer.public_key_bytes).digest()
    assert digest[:4] == bytes.fromhex("c74f20a3")


# -- refusals -------------------------------------------------------------------------------------


def test_a_tampered_text_is_refused() -> None:
    tampered = NOTE.replace("you don't know", "you know")
    with pytest.raises(VerificationError, match="invalid signature"):
        verify_note(tampered, [VKEY])


def test_a_tampered_signature_is_refused() -> None:
    with pytest.raises(VerificationError, match="invalid signature"):
        verify_note(_resign(NOTE, 0, _flip_last_byte), [VKEY])


def test_a_note_signed_only_by_an_unknown_key_is_refused() -> None:
    with pytest.raises(VerificationError, match="not signed by any trusted key"):
        verify_note(NOTE, [LOG.verifier_key])
    with pytest.raises(VerificationError, match="not signed by any trusted key"):
        verify_note(sign_note(TEXT, WITNESS), [VKEY, LOG.verifier])


def test_a_signature_sharing_only_the_name_of_a_trusted_key_is_ignored() -> None:
    impostor = Signer.from_seed("PeterNeumann", bytes(32))
    assert impostor.key_id.hex() != "c74f20a3"
    with pytest.raises(VerificationError, match="not signed by any trusted key"):
        verify_note(sign_note(TEXT, impostor), [VKEY])


def test_an_unknown_signature_next_to_a_trusted_one_is_ignored() -> None:
    note = sign_note(TEXT, WITNESS, parse_signer_key(SKEY))
    assert verify_note(note, [VKEY]) == (TEXT, ["PeterNeumann"])


@pytest.mark.parametrize(
    "note",
    [
        pytest.param(TEXT + SIG_LINE + "\n", id="no blank line"),
        pytest.param(TEXT + "\n" + SIG_LINE, id="no final newline"),
        pytest.param(TEXT + "\n" + SIG_LINE.replace("\u2014", "-") + "\n", id="hyphen not em dash"),
        pytest.param(TEXT + "\n" + SIG_LINE.replace("=", "") + "\n", id="unpadded base64"),
        pytest.param(TEXT + "\n" + SIG_LINE + "\n\n", id="trailing blank line"),
        pytest.param(TEXT + "\n\u2014 PeterNeumann x08g\n", id="signature too short"),
        pytest.param("bell\x07\n\n" + SIG_LINE + "\n", id="control character"),
        pytest.param(TEXT + "\n", id="no signatures"),
    ],
)
def test_a_malformed_note_is_refused(note: str) -> None:
    with pytest.raises(VerificationError):
        verify_note(note, [VKEY])


def test_the_text_is_split_from_the_signatures_at_the_last_blank_line() -> None:
    text = "first paragraph\n\nsecond paragraph\n"
    assert verify_note(sign_note(text, LOG), [LOG.verifier_key]) == (text, [LOG.name])


def test_text_that_does_not_end_in_a_newline_is_not_signed() -> None:
    with pytest.raises(ValueError):
        sign_note("no newline", LOG)


def test_a_verifier_key_with_a_wrong_key_id_is_refused() -> None:
    with pytest.raises(VerificationError, match="does not match"):
        parse_verifier_key(VKEY.replace("c74f20a3", "c74f20a4"))


def test_a_signer_key_with_a_wrong_key_id_is_refused() -> None:
    with pytest.raises(ValueError, match="does not match"):
        parse_signer_key(SKEY.replace("c74f20a3", "c74f20a4"))


def test_generated_keys_round_trip_through_their_strings() -> None:
    skey, vkey = generate_key("example.com/log42")
    signer = parse_signer_key(skey)
    assert signer.verifier_key == vkey
    assert parse_verifier_key(vkey).key_id == signer.key_id
    assert verify_note(sign_note("hello\n", signer), [vkey]) == ("hello\n", ["example.com/log42"])
    assert skey not in repr(signer)


# -- cosigning ------------------------------------------------------------------------------------


def test_a_cosigned_note_verifies_with_either_key_and_with_both() -> None:
    note = cosign(sign_note(TEXT, LOG), WITNESS)
    assert verify_note(note, [LOG.verifier_key]) == (TEXT, [LOG.name])
    assert verify_note(note, [WITNESS.verifier_key]) == (TEXT, [WITNESS.name])
    assert verify_note(note, [LOG.verifier_key, WITNESS.verifier_key]) == (
        TEXT,
        [LOG.name, WITNESS.name],
    )


def test_cosigning_keeps_the_existing_signatures_and_does_not_duplicate_its_own() -> None:
    signed = sign_note(TEXT, LOG)
    once = cosign(signed, WITNESS)
    assert once.startswith(signed)
    assert cosign(once, WITNESS) == once


def test_a_bad_signature_by_a_trusted_cosigner_spoils_the_note() -> None:
    note = _resign(cosign(sign_note(TEXT, LOG), WITNESS), 1, _flip_last_byte)
    with pytest.raises(VerificationError, match="invalid signature"):
        verify_note(note, [LOG.verifier_key, WITNESS.verifier_key])


def test_a_witness_asked_to_check_first_refuses_to_cosign_an_unverified_note() -> None:
    forged = sign_note(TEXT, Signer.from_seed(LOG.name, bytes(32)))
    with pytest.raises(VerificationError):
        cosign(forged, WITNESS, require=[LOG.verifier_key])


# -- checkpoints ----------------------------------------------------------------------------------


def test_a_signed_checkpoint_round_trips() -> None:
    tree = MerkleTree()
    for i in range(5):
        tree.append_entry(canonical_json({"seq": i}))
    text = format_checkpoint(LOG.name, tree.size, tree.root())
    assert text == f"{LOG.name}\n5\n{base64.b64encode(tree.root()).decode()}\n"
    note = cosign(sign_note(text, LOG), WITNESS)
    checkpoint, signed_by = verify_checkpoint(
        note, [LOG.verifier_key, WITNESS.verifier_key], origin=LOG.name
    )
    assert checkpoint == Checkpoint(LOG.name, 5, tree.root())
    assert signed_by == [LOG.name, WITNESS.name]


def test_checkpoint_extension_lines_round_trip() -> None:
    root = leaf_hash(b"")
    text = format_checkpoint("example.com/log", 1, root, ["ext one", "ext two"])
    assert parse_checkpoint(text) == Checkpoint("example.com/log", 1, root, ("ext one", "ext two"))


def test_a_checkpoint_from_another_origin_is_refused() -> None:
    note = sign_note(format_checkpoint(LOG.name, 0, hashlib.sha256().digest()), LOG)
    with pytest.raises(VerificationError, match="origin"):
        verify_checkpoint(note, [LOG.verifier_key], origin="log.example/room-2")


ROOT_B64 = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"origin\n5\n{ROOT_B64}", id="no final newline"),
        pytest.param("origin\n5\n", id="no root hash"),
        pytest.param(f"\n5\n{ROOT_B64}\n", id="empty origin"),
        pytest.param(f"origin\n05\n{ROOT_B64}\n", id="leading zero"),
        pytest.param(f"origin\n-5\n{ROOT_B64}\n", id="negative size"),
        pytest.param(f"origin\n5\n{ROOT_B64}\n\n", id="empty extension line"),
        pytest.param(f"origin\n5\n{ROOT_B64[:-1]}\n", id="unpadded root"),
        pytest.param("origin\n5\nAAAA\n", id="short root"),
    ],
)
def test_a_malformed_checkpoint_is_refused(text: str) -> None:
    with pytest.raises(VerificationError):
        parse_checkpoint(text)


# -- canonical JSON -------------------------------------------------------------------------------


def test_canonical_json_sorts_keys_drops_whitespace_and_keeps_utf8() -> None:
    value = {"b": [1, True, None], "a": {"z": "é", "y": "ε=0.5"}}
    assert canonical_json(value) == '{"a":{"y":"ε=0.5","z":"é"},"b":[1,true,null]}'.encode()


@pytest.mark.parametrize("bad", [0.5, float("nan"), float("inf")])
def test_canonical_json_refuses_a_float_and_names_its_path(bad: float) -> None:
    with pytest.raises(TypeError, match=r"\$\.budget\[1\]\.epsilon"):
        canonical_json({"budget": [{}, {"epsilon": bad}]})


def test_canonical_json_refuses_decimals_and_non_string_keys() -> None:
    with pytest.raises(TypeError, match="Decimal"):
        canonical_json({"epsilon": Decimal("0.5")})
    with pytest.raises(TypeError, match="key"):
        canonical_json({1: "one"})
