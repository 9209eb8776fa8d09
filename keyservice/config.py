"""What an organisation pins in its key service's state folder (`config.json`), as JSON: its
own id and approval public keys, its datasets with their transfer rules, the enclave sites it
knows with their jurisdictions, the trust roots and measurements it accepts, the callers it
answers, and the datasets it has suspended."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from cleanroom.residency import Place, SiteKind, TransferRules
from keyservice.release import Dataset, Pinned


def rules_json(rules: TransferRules) -> dict[str, Any]:
    return {
        "code": rules.code,
        "raw_processing_in": sorted(rules.raw_processing_in),
        "enclave_processing_in": sorted(rules.enclave_processing_in),
        "shares_may_go_to": sorted(rules.shares_may_go_to),
        "outputs_may_go_to": sorted(rules.outputs_may_go_to),
    }


def _rules(data: dict[str, Any]) -> TransferRules:
    return TransferRules(
        code=data["code"],
        raw_processing_in=frozenset(data["raw_processing_in"]),
        enclave_processing_in=frozenset(data["enclave_processing_in"]),
        shares_may_go_to=frozenset(data["shares_may_go_to"]),
        outputs_may_go_to=frozenset(data["outputs_may_go_to"]),
    )


def pinned_json(pinned: Pinned, callers: dict[str, bytes]) -> dict[str, Any]:
    return {
        "organization": pinned.organization,
        "approval_keys": [base64.b64encode(k).decode() for k in pinned.approval_keys],
        "datasets": {
            str(d.id): {"name": d.name, "rules": rules_json(d.rules)}
            for d in pinned.datasets.values()
        },
        "sites": {
            name: {"kind": p.kind.value, "jurisdiction": p.jurisdiction, "active": p.active}
            for name, p in pinned.sites.items()
        },
        "trusted_roots": [c.public_bytes(Encoding.PEM).decode() for c in pinned.trusted_roots],
        "allowed_measurements": [
            {str(i): pcr.hex() for i, pcr in entry.items()} for entry in pinned.allowed_measurements
        ],
        "suspended": sorted(pinned.suspended),
        "callers": {name: base64.b64encode(key).decode() for name, key in callers.items()},
    }


def load(state: Path) -> tuple[Pinned, dict[str, bytes]]:
    """The pinned trust and the callers' Ed25519 public keys, from `state/config.json`."""
    data = json.loads((state / "config.json").read_text())
    pinned = Pinned(
        organization=int(data["organization"]),
        approval_keys=tuple(base64.b64decode(k) for k in data["approval_keys"]),
        datasets={
            int(i): Dataset(id=int(i), name=d["name"], rules=_rules(d["rules"]))
            for i, d in data["datasets"].items()
        },
        sites={
            name: Place(
                name=name,
                kind=SiteKind(p["kind"]),
                jurisdiction=p["jurisdiction"],
                active=p.get("active", True),
            )
            for name, p in data["sites"].items()
        },
        trusted_roots=tuple(
            x509.load_pem_x509_certificate(pem.encode()) for pem in data["trusted_roots"]
        ),
        allowed_measurements=tuple(
            {int(i): bytes.fromhex(pcr) for i, pcr in entry.items()}
            for entry in data["allowed_measurements"]
        ),
        suspended=frozenset(int(i) for i in data.get("suspended", [])),
    )
    callers = {name: base64.b64decode(key) for name, key in data.get("callers", {}).items()}
    return pinned, callers
