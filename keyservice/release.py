"""The key service's own decision to release a data key to an enclave.

Nothing the host says is taken on trust: the key service recomputes the query's digest from the
approved canonical form, checks that one of its own organisation's pinned credentials (an
owner's passkey or the organisation's machine key) approved that digest, verifies the
attestation document against its own trust roots and measurement allow-list and expects it to
bind this job and that digest, decides residency for the enclave's site from its own pinned
places and its dataset's own transfer rules, and releases each (job, dataset) once. Then the
data key is unwrapped inside the organisation's token and sealed to the enclave's ephemeral
public key.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from cryptography import x509

from cleanroom.attestation.binding import binding, key_context
from cleanroom.attestation.verify import AttestationError, verify_attestation
from cleanroom.audit.verifier.approvals import (
    ApprovalError,
    PinnedCredential,
    approval_message,
    verify_evidence,
)
from cleanroom.audit.verifier.canonical import canonical_json
from cleanroom.crypto.sealing import seal
from cleanroom.residency import Place, SiteKind, StepKind, TransferRules, decide


class Refused(Exception):
    """The key service refuses the release; the message says why, for the host and the audit."""


class Unwrapper(Protocol):
    def unwrap(self, kek_id: str, wrapped: bytes, *, context: dict[str, str]) -> bytes: ...


@dataclass(frozen=True)
class Dataset:
    """What the organisation pins of one of its datasets."""

    id: int
    name: str  # qualified, as the canonical form names it
    rules: TransferRules


@dataclass(frozen=True)
class Pinned:
    """What the key service trusts, set by its organisation, not by the platform."""

    organization: int
    # The credentials the organisation's owners approve with (passkeys, machine keys).
    approvers: tuple[PinnedCredential, ...]
    datasets: Mapping[int, Dataset]
    sites: Mapping[str, Place]  # enclave and worker sites by name, with where they are
    trusted_roots: tuple[x509.Certificate, ...]
    allowed_measurements: tuple[Mapping[int, bytes], ...]
    suspended: Container[int] = field(default_factory=frozenset)  # dataset ids
    # Rooms the organisation suspended its participation in: none of its datasets there.
    suspended_rooms: Container[int] = field(default_factory=frozenset)


@dataclass(frozen=True)
class ReleaseRequest:
    """What the host relays for one dataset of a job."""

    job: int
    query: int
    dataset: int
    canonical: dict
    approval: dict  # the owner's evidence (cleanroom/audit/verifier/approvals.py)
    document: bytes
    site: str
    kek_id: str
    wrapped_key: bytes
    key_context: dict[str, str]


@dataclass(frozen=True)
class Released:
    sealed_key: bytes
    attestation_kind: str
    evidence_sha256: str
    reason: str


@dataclass(frozen=True)
class SiteKeyRequest:
    """An owner's own worker site asking for its dataset's key, to read its rows there (an
    MPC input step), for an approved query (which names the room)."""

    job: int
    query: int
    dataset: int
    canonical: dict
    approval: dict  # the owner's evidence, as for a release
    site: str
    kek_id: str
    wrapped_key: bytes
    key_context: dict[str, str]


class ReleaseLog:
    """Which (job, dataset) keys this service released: one line each, appended under a file
    lock, so a second request for the same job is refused even across processes."""

    def __init__(self, path: Path):
        self.path = path

    def claim(self, job: int, dataset: int) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self.path.open("a+") as log:
            fcntl.flock(log, fcntl.LOCK_EX)
            log.seek(0)
            entry = json.dumps({"job": job, "dataset": dataset}, sort_keys=True)
            if entry in log.read().splitlines():
                return False
            log.write(entry + "\n")
            log.flush()
            return True


def _check_approved(request: ReleaseRequest | SiteKeyRequest, pinned: Pinned, digest: str) -> None:
    organization = f"org:{pinned.organization}"
    message = approval_message(f"query:{request.query}", digest, organization, "approve")
    try:
        verify_evidence(
            request.approval, message=message, organization=organization, pinned=pinned.approvers
        )
    except ApprovalError as exc:
        raise Refused(f"this organisation did not approve the query's digest: {exc}") from None


def _dataset(pinned: Pinned, dataset_id: int) -> Dataset:
    dataset = pinned.datasets.get(dataset_id)
    if dataset is None:
        raise Refused(f"dataset:{dataset_id} is not a dataset of this organisation")
    if dataset_id in pinned.suspended:
        raise Refused(f"{dataset.name} is suspended by its owner")
    return dataset


def _check_room(pinned: Pinned, canonical: dict, dataset: Dataset) -> None:
    """Refuse a room the organisation suspended its participation in. The room is read from
    the approved canonical form, which the organisation's approval signature binds, never from
    a field a host or the platform could set."""
    room = str(canonical.get("room", ""))
    number = room.removeprefix("room:")
    if not room.startswith("room:") or not number.isdigit():
        raise Refused("the approved query names no room")
    if int(number) in pinned.suspended_rooms:
        raise Refused(
            f"this organisation suspended its participation in {room}: "
            f"no key for {dataset.name} there"
        )


def _place(pinned: Pinned, site: str) -> Place:
    place = pinned.sites.get(site)
    if place is None:
        raise Refused(f"{site} is not a site this organisation knows")
    return place


def decide_site_key(
    request: SiteKeyRequest, pinned: Pinned, *, keys: Unwrapper
) -> tuple[bytes, str]:
    """The data key for the owner's own worker site, where residency allows its rows in
    plaintext, for a query it approved that reads the dataset in a room it still takes part
    in; with the reason. Never for an enclave or an MPC party site."""
    dataset = _dataset(pinned, request.dataset)
    if request.key_context.get("dataset") != str(dataset.id):
        raise Refused(f"the wrapped key relayed is not {dataset.name}'s")
    if not any(d.get("name") == dataset.name for d in request.canonical.get("datasets", [])):
        raise Refused(f"the approved query does not read {dataset.name}")
    digest = hashlib.sha256(canonical_json(request.canonical)).hexdigest()
    _check_approved(request, pinned, digest)
    _check_room(pinned, request.canonical, dataset)
    place = _place(pinned, request.site)
    if place.kind != SiteKind.WORKER:
        raise Refused(f"{request.site} is not a worker site: keys go there only attested")
    decision = decide(StepKind.PROCESS_ROWS, data=dataset.rules, site=place)
    if not decision.allowed:
        raise Refused(f"residency: {decision.reason}")
    data_key = keys.unwrap(request.kek_id, request.wrapped_key, context=request.key_context)
    return data_key, decision.reason


def decide_release(
    request: ReleaseRequest,
    pinned: Pinned,
    *,
    keys: Unwrapper,
    log: ReleaseLog,
    at: datetime,
) -> Released:
    """Release the dataset's key sealed to the attested enclave, or raise Refused."""
    dataset = _dataset(pinned, request.dataset)
    digest = hashlib.sha256(canonical_json(request.canonical)).hexdigest()
    item = next(
        (d for d in request.canonical.get("datasets", []) if d.get("name") == dataset.name), None
    )
    if item is None:
        raise Refused(f"the approved query does not read {dataset.name}")
    # The wrapped key opens only under its own context: it must be this dataset's approved
    # version, not another dataset's key relayed under this one's name.
    if request.key_context.get("dataset") != str(dataset.id) or request.key_context.get(
        "version"
    ) != str(item.get("version")):
        raise Refused(f"the wrapped key relayed is not {dataset.name}'s approved version")
    _check_approved(request, pinned, digest)
    _check_room(pinned, request.canonical, dataset)
    try:
        verified = verify_attestation(
            request.document,
            trusted_roots=list(pinned.trusted_roots),
            at=at,
            allowed_measurements=list(pinned.allowed_measurements),
            expected_user_data=binding(request.job, digest),
        )
    except AttestationError as exc:
        raise Refused(f"attestation refused: {exc}") from None
    if verified.public_key is None:
        raise Refused("the attested enclave names no public key to seal the data key to")
    place = _place(pinned, request.site)
    if place.kind != SiteKind.TEE:
        raise Refused(f"{request.site} is not an enclave site")
    decision = decide(StepKind.PROCESS_ROWS, data=dataset.rules, site=place)
    if not decision.allowed:
        raise Refused(f"residency: {decision.reason}")
    if not log.claim(request.job, request.dataset):
        raise Refused(f"the key of {dataset.name} was already released for job {request.job}")
    data_key = keys.unwrap(request.kek_id, request.wrapped_key, context=request.key_context)
    return Released(
        sealed_key=seal(
            verified.public_key, data_key, context=key_context(request.job, dataset.name)
        ),
        attestation_kind=verified.kind,
        evidence_sha256=verified.evidence_sha256,
        reason=decision.reason,
    )
