"""An owner's decision, signed where the owner's machine key is: the client reads the key file,
signs the approval message with it and sends only the detached signature and the key's id.

The approval message and the key id are defined by the audit kernel
(`cleanroom/audit/verifier/approvals.py`); the client may not import it (it speaks HTTP only),
so they are restated here, and `tests/client/test_approvals.py` holds the two byte for byte equal.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

APPROVAL_FORMAT = "cleanroom-approval/v1"
MACHINE_KEY = "machine-key"


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
