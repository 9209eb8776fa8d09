"""What an organisation pins in its key service's state folder, `config.json`: its own id and
approval public keys, the transfer rules of the jurisdictions its datasets live in, the sites
it knows with their kinds and jurisdictions, the attestation roots and measurements it
accepts, the datasets it has suspended and the rooms it suspended its participation in, and the
callers it answers with what each may ask.

Its datasets are learned as their keys are wrapped (`datasets.json`, `DatasetBook`): a dataset
is registered once, in a jurisdiction the organisation pinned, and never moved."""

from __future__ import annotations

import base64
import fcntl
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from cleanroom.audit.verifier.approvals import PinnedCredential
from cleanroom.residency import Place, SiteKind, TransferRules
from keyservice.release import Dataset, Pinned, Refused

OPERATIONS = (
    "keys",
    "wrap",
    "release",
    "site-key",
    "suspend",
    "resume",
    "receiving-key",
    "open",
    "destroy",
)
# What an organisation grants a caller: each operation, and `open` by what the key opened was
# sealed to: the organisation's `results` (a receiver's result), or a job's delivery key (an MPC
# job's output shares, which only its compute party's delivery may open).
GRANTS = (*(op for op in OPERATIONS if op != "open"), "open-results", "open-delivery")


def grant_for(operation: str, purpose: str) -> str:
    """The grant a caller needs to ask `operation` for a key of `purpose`."""
    if operation != "open":
        return operation
    return "open-results" if purpose == "results" else "open-delivery"


@dataclass(frozen=True)
class Caller:
    key: bytes  # raw Ed25519 public key
    may: frozenset[str]  # of GRANTS


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


class DatasetBook(Mapping[int, Dataset]):
    """The organisation's datasets, registered as their keys are wrapped, each in a pinned
    jurisdiction; the file is locked while it is read or changed."""

    def __init__(self, path: Path, jurisdictions: Mapping[str, TransferRules]):
        self.path = path
        self.jurisdictions = jurisdictions

    def _entries(self) -> dict[str, dict[str, str]]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def register(self, dataset: int, name: str, jurisdiction: str) -> None:
        if jurisdiction not in self.jurisdictions:
            raise Refused(f"{jurisdiction} is not a jurisdiction this organisation keeps data in")
        entry = {"name": name, "jurisdiction": jurisdiction}
        with self.path.with_suffix(".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self._entries()
            if entries.setdefault(str(dataset), entry) != entry:
                raise Refused(f"dataset:{dataset} is registered as {entries[str(dataset)]}")
            self.path.write_text(json.dumps(entries, sort_keys=True))

    def __getitem__(self, dataset: int) -> Dataset:
        entry = self._entries()[str(dataset)]
        return Dataset(
            id=dataset, name=entry["name"], rules=self.jurisdictions[entry["jurisdiction"]]
        )

    def __iter__(self) -> Iterator[int]:
        return iter(int(i) for i in self._entries())

    def __len__(self) -> int:
        return len(self._entries())


class Suspensions:
    """What the organisation suspended (its datasets, or its participation in rooms), kept in
    the state folder: a suspension takes effect on the next request; lifting one is an operation
    the organisation grants only to its own administrators (`python -m keyservice resume`, or a
    caller it allows `resume`)."""

    def __init__(self, path: Path, pinned: Iterable[int] = (), kind: str = "dataset"):
        self.path = path
        self.pinned = frozenset(pinned)
        self.kind = kind

    def _read(self) -> set[int]:
        try:
            return set(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return set()

    def _change(self, dataset: int, suspended: bool) -> None:
        with self.path.with_suffix(".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self._read()
            (current.add if suspended else current.discard)(dataset)
            self.path.write_text(json.dumps(sorted(current)))

    def suspend(self, item: int) -> None:
        self._change(item, True)

    def resume(self, item: int) -> None:
        if item in self.pinned:
            raise Refused(
                f"{self.kind}:{item} is suspended in config.json; only its owner edits it"
            )
        self._change(item, False)

    def __contains__(self, item: object) -> bool:
        return item in self.pinned or item in self._read()


def config_json(
    *,
    organization: int,
    approvers: list[PinnedCredential],
    jurisdictions: list[TransferRules],
    sites: Mapping[str, Place],
    trusted_roots: list[x509.Certificate],
    allowed_measurements: list[Mapping[int, bytes]],
    callers: Mapping[str, Caller],
    suspended: Iterable[int] = (),
    suspended_rooms: Iterable[int] = (),
) -> dict[str, Any]:
    return {
        "organization": organization,
        "approvers": [credential.as_json() for credential in approvers],
        "jurisdictions": {rules.code: rules_json(rules) for rules in jurisdictions},
        "sites": {
            name: {"kind": p.kind.value, "jurisdiction": p.jurisdiction, "active": p.active}
            for name, p in sites.items()
        },
        "trusted_roots": [c.public_bytes(Encoding.PEM).decode() for c in trusted_roots],
        "allowed_measurements": [
            {str(i): pcr.hex() for i, pcr in entry.items()} for entry in allowed_measurements
        ],
        "suspended": sorted(suspended),
        "suspended_rooms": sorted(suspended_rooms),
        "callers": {
            name: {"key": base64.b64encode(c.key).decode(), "may": sorted(c.may)}
            for name, c in callers.items()
        },
    }


def load(state: Path) -> tuple[Pinned, DatasetBook, dict[str, Caller]]:
    """What the organisation pinned in `state/config.json`, its dataset book, and its callers."""
    data = json.loads((state / "config.json").read_text())
    jurisdictions = {code: _rules(rules) for code, rules in data["jurisdictions"].items()}
    book = DatasetBook(state / "datasets.json", jurisdictions)
    pinned = Pinned(
        organization=int(data["organization"]),
        approvers=tuple(PinnedCredential.from_json(c) for c in data["approvers"]),
        datasets=book,
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
        suspended=Suspensions(
            state / "suspended.json", (int(i) for i in data.get("suspended", []))
        ),
        suspended_rooms=Suspensions(
            state / "suspended_rooms.json",
            (int(i) for i in data.get("suspended_rooms", [])),
            kind="room",
        ),
    )
    callers = {
        name: Caller(key=base64.b64decode(c["key"]), may=frozenset(c["may"]) & set(GRANTS))
        for name, c in data.get("callers", {}).items()
    }
    return pinned, book, callers
