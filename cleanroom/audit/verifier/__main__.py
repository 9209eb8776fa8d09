"""The command line: verify a bundle, and any result openings, against a trust file.

    python3 verify.pyz BUNDLE.zip --trust TRUSTFILE [--previous CHECKPOINT] [--result OPENING]

(or ``python -m cleanroom.audit.verifier`` from a checkout). It exits 0 when everything checks
out, 1 naming the first failure, 2 when a file cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import VerificationError
from .bundle import parse_trust_file, verify_bundle
from .rules import check_opening


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="verify.pyz",
        description="Verify a clean-room audit bundle offline (Python + cryptography only).",
    )
    parser.add_argument("bundle", help="the bundle zip")
    parser.add_argument(
        "--trust", required=True, help="trusted keys, one vkey a line (manage.py audit_keys)"
    )
    parser.add_argument("--previous", help="a checkpoint of this log you saved earlier")
    parser.add_argument(
        "--result",
        action="append",
        default=[],
        help="a result's opening, as its receiver downloads it: checked against the log",
    )
    args = parser.parse_args(argv)
    try:
        with open(args.trust, encoding="utf-8") as handle:
            trust = parse_trust_file(handle.read())
        previous = None
        if args.previous:
            with open(args.previous, encoding="utf-8") as handle:
                previous = handle.read()
        report = verify_bundle(args.bundle, trust, previous=previous)
        opened = []
        for path in args.result:
            with open(path, encoding="utf-8") as handle:
                try:
                    opening = json.load(handle)
                except ValueError:
                    raise VerificationError(f"{path} is not JSON") from None
            opened.append(check_opening(opening, report.released))
    except VerificationError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"FAILED: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"OK: {report.origin}: {report.size} events, root {report.root_hash.hex()}")
    print(f"  signed by {', '.join(report.signed_by)}", end="")
    print(f"; cosigned by {', '.join(report.cosigned_by)}" if report.cosigned_by else "")
    if report.previous_size is not None:
        print(f"  extends the previous checkpoint at size {report.previous_size}")
    print(f"  {report.attachments} attachments; approvals, residency, budgets, receivers and")
    print("  attestations satisfy the clean room's rules")
    for job in opened:
        print(f"  the result of {job} you hold matches the commitment its release logged")
    if report.approvals_pinned:
        print("  every approval is an owner's assertion (passkey) or signature (machine key) by a")
        print("  credential your trust file pins for that organisation")
    else:
        print("  every approval is an owner's assertion or signature by the credential the log")
        print("  names; pin the owners' credentials ('passkey' and 'machine-key' lines, from")
        print("  manage.py export_owner_credentials, confirmed with each owner) to check them")
        print("  against credentials you obtained yourself")
    return 0


if __name__ == "__main__":
    sys.exit(main())
