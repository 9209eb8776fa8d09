"""An owner's decision, signed where the owner's machine key is: the client recomputes the
version's digest from the canonical form the server shows, reads the key file, signs the
approval message with it and sends only the detached signature and the key's id.

Canonical JSON, the approval message and the key id are defined by the audit kernel
(`cleanroom/audit/verifier/canonical.py` and `approvals.py`) and the digest by the query
service (`jobs/queries/canonical.py`, `digest_of`); the client may not import them (it speaks
HTTP only), so they are restated here, and `tests/client/test_approvals.py` holds each byte for
byte equal.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

APPROVAL_FORMAT = "cleanroom-approval/v1"
MACHINE_KEY = "machine-key"


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8; a float anywhere, a key that is not a string or a
    value that is not JSON raises TypeError (no canonical form holds one)."""
    _check_canonical(value, "$")
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as problem:  # a lone surrogate
        raise TypeError(f"string is not valid Unicode: {problem}") from None


def _check_canonical(value: Any, path: str) -> None:
    if value is None or isinstance(value, (str, int)):  # int includes bool
        return
    if isinstance(value, float):
        raise TypeError(f"float at {path} is not allowed in canonical JSON")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"non-string key {key!r} at {path}")
            _check_canonical(item, f"{path}.{key}")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_canonical(item, f"{path}[{index}]")
        return
    raise TypeError(f"{type(value).__name__} at {path} is not a JSON type")


def query_digest(canonical: dict[str, Any]) -> str:
    """A query version's digest: SHA-256 of its canonical form's canonical JSON, in hex."""
    return hashlib.sha256(canonical_json(canonical)).hexdigest()


def approval_message(query: str, digest: str, organization: str, decision: str) -> bytes:
    """The format, `query:<id>`, the version's digest, `org:<id>` and `approve` or `reject`,
    one a line."""
    return f"{APPROVAL_FORMAT}\n{query}\n{digest}\n{organization}\n{decision}\n".encode()


def machine_key_id(public_key: bytes) -> bytes:
    """The first 16 bytes of SHA-256 of the raw public key, as the platform names the key."""
    return hashlib.sha256(public_key).digest()[:16]


def load_machine_key(path: str | Path) -> Ed25519PrivateKey:
    """The raw 32-byte Ed25519 private key that `python -m keyservice.approve new-key` writes."""
    try:
        raw = Path(path).read_bytes()
    except OSError as problem:
        raise ValueError(f"Cannot read the key file: {problem}") from None
    if len(raw) != 32:
        raise ValueError(
            f"{path} is not a machine key: it holds {len(raw)} bytes, not a raw 32-byte "
            "Ed25519 private key (`python -m keyservice.approve new-key` writes one)."
        )
    return Ed25519PrivateKey.from_private_bytes(raw)


def machine_key_assertion(
    key: Ed25519PrivateKey, *, query_id: int, digest: str, organization_id: int, decision: str
) -> dict[str, str]:
    """The API's `assertion` for a machine key: its id and the detached signature."""
    message = approval_message(f"query:{query_id}", digest, f"org:{organization_id}", decision)
    public = key.public_key().public_bytes_raw()
    return {
        "type": MACHINE_KEY,
        "credential_id": base64.b64encode(machine_key_id(public)).decode(),
        "signature": base64.b64encode(key.sign(message)).decode(),
    }
