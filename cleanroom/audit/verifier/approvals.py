"""An owner's approval, as whoever holds the owner's pinned credentials checks it: the platform
when it takes the decision, the planner and the worker before a job runs, the owner's own key
service before it releases a key, and a regulator's verify.pyz offline.

An approval is the owner's, never the platform's: either a WebAuthn assertion by one of the
owner's passkeys, whose challenge is SHA-256 of the approval message (:func:`approval_message`:
the decision bound to the query version's digest and the organisation), or an Ed25519 signature
over that message by a machine key the organisation holds itself. What is stored and logged of
an approval is its *evidence*, one JSON object:

- ``{"kind": "passkey", "credential_id", "public_key" (COSE), "rp_id", "authenticator_data",
  "client_data_json", "signature"}``
- ``{"kind": "machine-key", "credential_id", "public_key" (raw Ed25519), "signature"}``

bytes as standard base64. :func:`verify_evidence` checks it against the credentials pinned for
the organisation; a replayed assertion (another query, version or decision) carries another
challenge, and so fails. Standard library and ``cryptography`` only: verify.pyz ships this file.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import VerificationError
from .notes import strict_b64decode

APPROVAL_FORMAT = "cleanroom-approval/v1"
PASSKEY = "passkey"
MACHINE_KEY = "machine-key"
KINDS = (PASSKEY, MACHINE_KEY)
_USER_PRESENT = 0x01
_USER_VERIFIED = 0x04


class ApprovalError(VerificationError):
    """The evidence does not make this approval the owner's; the message says why."""


def approval_message(query: str, digest: str, organization: str, decision: str) -> bytes:
    """What an owner's credential signs when it decides on a query version: the format, the
    query id, its digest, the organisation id and ``approve`` or ``reject``, one a line."""
    return f"{APPROVAL_FORMAT}\n{query}\n{digest}\n{organization}\n{decision}\n".encode()


def approval_challenge(message: bytes) -> bytes:
    """The WebAuthn challenge of a decision: SHA-256 of its approval message, so that the
    assertion is bound to that query version, decision and organisation and to nothing else."""
    return hashlib.sha256(message).digest()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class PinnedCredential:
    """One credential an organisation approves with, as its key service or a regulator pins
    it: the organisation (``org:<id>``), the kind, the credential id, its public key (COSE for a
    passkey, raw Ed25519 for a machine key) and, for a passkey, its relying party id."""

    organization: str
    kind: str
    credential_id: bytes
    public_key: bytes
    rp_id: str = ""

    def as_json(self) -> dict[str, str]:
        return {
            "organization": self.organization,
            "kind": self.kind,
            "credential_id": base64.b64encode(self.credential_id).decode(),
            "public_key": base64.b64encode(self.public_key).decode(),
            "rp_id": self.rp_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, str]) -> PinnedCredential:
        return cls(
            organization=str(data["organization"]),
            kind=str(data["kind"]),
            credential_id=strict_b64decode(str(data["credential_id"]), "a credential id"),
            public_key=strict_b64decode(str(data["public_key"]), "a credential public key"),
            rp_id=str(data.get("rp_id", "")),
        )

    def trust_line(self) -> str:
        """This credential as a trust-file line (see bundle.parse_trust_file)."""
        ident = base64.b64encode(self.credential_id).decode()
        key = base64.b64encode(self.public_key).decode()
        if self.kind == PASSKEY:
            return f"passkey {self.organization} {self.rp_id} {ident} {key}"
        return f"machine-key {self.organization} {ident} {key}"


def machine_key_id(public_key: bytes) -> bytes:
    """A machine key's credential id: the first 16 bytes of SHA-256 of its raw public key."""
    return hashlib.sha256(public_key).digest()[:16]


def _bytes(evidence: dict, name: str) -> bytes:
    if name not in evidence:
        raise ApprovalError(f"the approval evidence lacks {name!r}")
    return strict_b64decode(str(evidence[name]), f"the approval's {name}")


def verify_evidence(
    evidence: Any,
    *,
    message: bytes,
    organization: str,
    pinned: Iterable[PinnedCredential] | None,
) -> PinnedCredential:
    """Check that `evidence` is the organisation's decision of `message`, by one of the
    credentials `pinned` for it (None: the credential the evidence names, which the caller
    vouches for otherwise, as a bundle's signed log does). Returns the credential, or raises
    ApprovalError naming what fails."""
    if not isinstance(evidence, dict):
        raise ApprovalError("the approval carries no owner's assertion or signature")
    kind = evidence.get("kind")
    if kind not in KINDS:
        raise ApprovalError(f"the approval evidence is of unknown kind {kind!r}")
    credential = PinnedCredential(
        organization=organization,
        kind=kind,
        credential_id=_bytes(evidence, "credential_id"),
        public_key=_bytes(evidence, "public_key"),
        rp_id=str(evidence.get("rp_id", "")) if kind == PASSKEY else "",
    )
    if pinned is not None and credential not in set(pinned):
        raise ApprovalError(f"the {kind} that signed is not a credential pinned for {organization}")
    signature = _bytes(evidence, "signature")
    if kind == MACHINE_KEY:
        if len(credential.public_key) != 32:
            raise ApprovalError("a machine key is a 32-byte Ed25519 public key")
        try:
            Ed25519PublicKey.from_public_bytes(credential.public_key).verify(signature, message)
        except InvalidSignature:
            raise ApprovalError(
                f"the machine key's signature of {organization} does not verify for this decision"
            ) from None
        return credential
    _verify_assertion(
        credential,
        authenticator_data=_bytes(evidence, "authenticator_data"),
        client_data_json=_bytes(evidence, "client_data_json"),
        signature=signature,
        challenge=approval_challenge(message),
    )
    return credential


def _verify_assertion(
    credential: PinnedCredential,
    *,
    authenticator_data: bytes,
    client_data_json: bytes,
    signature: bytes,
    challenge: bytes,
) -> None:
    """WebAuthn Level 2, §7.2 steps 11 to 21, for what can be checked without the server's
    state (the signature counter is the server's)."""
    try:
        client = json.loads(client_data_json)
    except ValueError:
        raise ApprovalError("the assertion's client data is not JSON") from None
    if not isinstance(client, dict) or client.get("type") != "webauthn.get":
        raise ApprovalError("the assertion's client data is not of an authentication")
    if client.get("challenge") != b64url(challenge):
        raise ApprovalError(
            "the assertion answers another challenge: it was made for another query version, "
            "decision or organisation"
        )
    host = urlsplit(str(client.get("origin", ""))).hostname or ""
    rp_id = credential.rp_id
    if not rp_id or not (host == rp_id or host.endswith("." + rp_id)):
        raise ApprovalError(f"the assertion comes from {client.get('origin')!r}, not {rp_id!r}")
    if client.get("crossOrigin") is True:
        raise ApprovalError("the assertion was made in a cross-origin frame")
    if len(authenticator_data) < 37:
        raise ApprovalError("the assertion's authenticator data is truncated")
    if authenticator_data[:32] != hashlib.sha256(rp_id.encode()).digest():
        raise ApprovalError(f"the assertion is for another relying party than {rp_id!r}")
    flags = authenticator_data[32]
    if not flags & _USER_PRESENT or not flags & _USER_VERIFIED:
        raise ApprovalError("the authenticator did not verify the user")
    signed = authenticator_data + hashlib.sha256(client_data_json).digest()
    try:
        _cose_verify(credential.public_key, signature, signed)
    except InvalidSignature:
        raise ApprovalError(
            f"the passkey's signature of {credential.organization} does not verify"
        ) from None


def _cose_verify(cose_key: bytes, signature: bytes, signed: bytes) -> None:
    key = cose_public_key(cose_key)
    if isinstance(key, Ed25519PublicKey):
        key.verify(signature, signed)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))
    else:
        key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())


def cose_public_key(cose_key: bytes):
    """The public key a COSE_Key (RFC 9053) holds: ES256 (P-256), EdDSA (Ed25519) or RS256."""
    data, end = _cbor(cose_key, 0)
    if end != len(cose_key) or not isinstance(data, dict):
        raise ApprovalError("the credential public key is not a COSE key")
    kty, alg = data.get(1), data.get(3)
    try:
        if kty == 2 and alg == -7 and data.get(-1) == 1:
            x, y = data[-2], data[-3]
            if len(x) != 32 or len(y) != 32:
                raise ApprovalError("a P-256 COSE key has 32-byte coordinates")
            return ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            ).public_key()
        if kty == 1 and alg == -8 and data.get(-1) == 6:
            return Ed25519PublicKey.from_public_bytes(data[-2])
        if kty == 3 and alg == -257:
            n, e = data[-1], data[-2]
            return rsa.RSAPublicNumbers(
                int.from_bytes(e, "big"), int.from_bytes(n, "big")
            ).public_key()
    except (KeyError, TypeError, ValueError) as exc:
        raise ApprovalError(f"the credential public key is malformed: {exc}") from None
    raise ApprovalError(f"the credential public key is of an unsupported kind ({kty}, {alg})")


def _cbor(data: bytes, at: int) -> tuple[Any, int]:
    """One CBOR item (RFC 8949) of the kinds a COSE key holds: integers, byte and text strings,
    arrays and maps, of definite length."""
    if at >= len(data):
        raise ApprovalError("the COSE key is truncated")
    major, info = data[at] >> 5, data[at] & 0x1F
    at += 1
    if info < 24:
        value = info
    elif info in (24, 25, 26, 27):
        size = 1 << (info - 24)
        if at + size > len(data):
            raise ApprovalError("the COSE key is truncated")
        value = int.from_bytes(data[at : at + size], "big")
        at += size
    else:
        raise ApprovalError("the COSE key uses an indefinite or reserved CBOR length")
    if major == 0:
        return value, at
    if major == 1:
        return -1 - value, at
    if major in (2, 3):
        if at + value > len(data):
            raise ApprovalError("the COSE key is truncated")
        chunk = data[at : at + value]
        return (chunk if major == 2 else chunk.decode()), at + value
    if major == 4:
        items = []
        for _ in range(value):
            item, at = _cbor(data, at)
            items.append(item)
        return items, at
    if major == 5:
        entries: dict = {}
        for _ in range(value):
            key, at = _cbor(data, at)
            entries[key], at = _cbor(data, at)
        return entries, at
    raise ApprovalError("the COSE key holds a CBOR item of an unexpected kind")
