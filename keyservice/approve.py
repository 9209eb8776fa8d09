"""An organisation's machine approval, made where its key is, never on the platform:

    python -m keyservice.approve new-key approver.key        # once; register the printed key
    python -m keyservice.approve sign approver.key --query query:5 --digest <hex> \\
        --organization org:3 [--reject] > decision.json
    curl -H "Authorization: Token …" -H "Content-Type: application/json" \\
        -d @decision.json https://<platform>/api/rooms/<room>/queries/5/approve/

`sign` prints the API's decision body: the detached Ed25519 signature over the approval message
(cleanroom/audit/verifier/approvals.py) with the key's id. Take the query's id and digest from
the query as the API shows it, and check its canonical form before signing: the signature binds
exactly that digest. The key file holds the raw 32-byte private key, readable by its owner only.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cleanroom.audit.verifier.approvals import MACHINE_KEY, approval_message, machine_key_id


def new_key(path: Path) -> str:
    """Write a new private key to `path` (refusing to overwrite one); the public key, base64."""
    key = Ed25519PrivateKey.generate()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(key.private_bytes_raw())
    return base64.b64encode(key.public_key().public_bytes_raw()).decode()


def decision_body(
    key: Ed25519PrivateKey, *, query: str, digest: str, organization: str, approve: bool
) -> dict:
    message = approval_message(query, digest, organization, "approve" if approve else "reject")
    public = key.public_key().public_bytes_raw()
    return {
        "assertion": {
            "type": MACHINE_KEY,
            "credential_id": base64.b64encode(machine_key_id(public)).decode(),
            "signature": base64.b64encode(key.sign(message)).decode(),
        }
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keyservice.approve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("new-key", help="Create a key file; print its public key.")
    create.add_argument("key", type=Path)
    sign = commands.add_parser("sign", help="Print the signed decision body for the API.")
    sign.add_argument("key", type=Path)
    sign.add_argument("--query", required=True, help="query:<id>")
    sign.add_argument("--digest", required=True, help="the version's digest (hex)")
    sign.add_argument("--organization", required=True, help="org:<id>")
    sign.add_argument("--reject", action="store_true", help="reject instead of approving")
    args = parser.parse_args(argv)
    if args.command == "new-key":
        print(new_key(args.key))
        return 0
    key = Ed25519PrivateKey.from_private_bytes(args.key.read_bytes())
    body = decision_body(
        key,
        query=args.query,
        digest=args.digest,
        organization=args.organization,
        approve=not args.reject,
    )
    json.dump(body, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
