"""A synthetic room log in the event vocabulary (cleanroom/audit/events.py): one query run from
submission to released result, and mutations of it that break one domain rule each.

The query and job services emit these events as they are built; until then the verifier's rules
are tested against logs written here, through the same `record_event`.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.db import transaction

from cleanroom.audit.log import record_event
from cleanroom.audit.verifier.approvals import (
    MACHINE_KEY,
    PASSKEY,
    PinnedCredential,
    approval_challenge,
    approval_message,
    machine_key_id,
)
from cleanroom.testing import SoftwareAuthenticator

DIGEST = "d" * 64
CHARITE, USZ, PHARMA, OUTSIDER = "org:1", "org:2", "org:3", "org:9"

Run = list[tuple[str, dict]]


RP_ID, ORIGIN = "localhost", "http://localhost:8000"


def _seed(organization: str) -> bytes:
    return hashlib.sha256(organization.encode()).digest()


def organization_device(organization: str) -> SoftwareAuthenticator:
    """Charité's owner approves with a passkey: a fixed software authenticator, so runs are
    reproducible."""
    scalar = int.from_bytes(_seed(organization), "big") % (2**255)
    return SoftwareAuthenticator(
        rp_id=RP_ID,
        origin=ORIGIN,
        private_key=ec.derive_private_key(scalar, ec.SECP256R1()),
        credential_id=_seed(organization)[:16],
    )


def machine_key(organization: str) -> Ed25519PrivateKey:
    """Zurich approves with a machine key it holds: a fixed Ed25519 key."""
    return Ed25519PrivateKey.from_private_bytes(_seed(organization))


def pinned_credential(organization: str) -> PinnedCredential:
    """What a regulator pins for the organisation: a passkey for Charité, else a machine key."""
    if organization == CHARITE:
        device = organization_device(organization)
        return PinnedCredential(
            organization, PASSKEY, device.credential_id, device.cose_key(), RP_ID
        )
    public = machine_key(organization).public_key().public_bytes_raw()
    return PinnedCredential(organization, MACHINE_KEY, machine_key_id(public), public)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unurl(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def evidence_for(organization: str, message: bytes) -> dict:
    """The owner's evidence for `message`, as the platform stores and logs it."""
    credential = pinned_credential(organization)
    if credential.kind == MACHINE_KEY:
        return {
            "kind": MACHINE_KEY,
            "credential_id": _b64(credential.credential_id),
            "public_key": _b64(credential.public_key),
            "signature": _b64(machine_key(organization).sign(message)),
        }
    answer = organization_device(organization).get(approval_challenge(message))["response"]
    return {
        "kind": PASSKEY,
        "credential_id": _b64(credential.credential_id),
        "public_key": _b64(credential.public_key),
        "rp_id": RP_ID,
        "authenticator_data": _b64(_unurl(answer["authenticatorData"])),
        "client_data_json": _b64(_unurl(answer["clientDataJSON"])),
        "signature": _b64(_unurl(answer["signature"])),
    }


def sign_decisions(run: Run) -> Run:
    """Have each organisation's owner decide every approval and rejection of the run with its
    own credential, as `jobs.queries.decide_query` takes it from the owner."""
    decisions = {"query.approved": "approve", "query.rejected": "reject"}
    for kind, data in run:
        if kind in decisions:
            message = approval_message(
                data["query"], data["digest"], data["organization"], decisions[kind]
            )
            data["approval"] = evidence_for(data["organization"], message)
    return run


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def happy_run(expires_at: datetime | None = None) -> Run:
    expires = iso(expires_at or datetime.now(UTC) + timedelta(days=7))
    job = {"job": "job:5"}
    return sign_decisions(_run(expires, job))


def _run(expires: str, job: dict) -> Run:
    return [
        (
            "room.dataset_contributed",
            {
                "dataset": "dataset:1",
                "version": 1,
                "policy_version": 2,
                "jurisdiction": "EU",
                "owner": CHARITE,
                "total_epsilon": "3",
                "total_delta": "0.000001",
            },
        ),
        (
            "room.dataset_contributed",
            {
                "dataset": "dataset:2",
                "version": 1,
                "policy_version": 2,
                "jurisdiction": "CH",
                "owner": USZ,
                "total_epsilon": "3",
                "total_delta": "0",
            },
        ),
        (
            "query.submitted",
            {
                "query": "query:7",
                "lineage": "query:7",
                "version": 1,
                "digest": DIGEST,
                "datasets": [
                    {
                        "dataset": "dataset:1",
                        "version": 1,
                        "policy_version": 2,
                        "owner": CHARITE,
                        "jurisdiction": "EU",
                    },
                    {
                        "dataset": "dataset:2",
                        "version": 1,
                        "policy_version": 2,
                        "owner": USZ,
                        "jurisdiction": "CH",
                    },
                ],
                "required_approvers": [CHARITE, USZ],
                "receivers": [PHARMA],
                "epsilon": "1",
                "delta": "0",
                "mechanism": "mpc",
                "output_kind": "aggregate",
                "expires_at": expires,
                "residency": [],
            },
        ),
        (
            "query.approved",
            {
                "query": "query:7",
                "digest": DIGEST,
                "organization": CHARITE,
            },
        ),
        (
            "query.approved",
            {
                "query": "query:7",
                "digest": DIGEST,
                "organization": USZ,
            },
        ),
        (
            "job.dispatched",
            {
                **job,
                "query": "query:7",
                "digest": DIGEST,
                "steps": [
                    {"step": "input-1", "site": "eu-frankfurt", "jurisdiction": "EU"},
                    {"step": "input-2", "site": "ch-zurich", "jurisdiction": "CH"},
                ],
            },
        ),
        (
            "residency.decided",
            {
                **job,
                "step": "input-1",
                "site": "eu-frankfurt",
                "site_jurisdiction": "EU",
                "data_jurisdiction": "EU",
                "kind": "process_rows",
                "allowed_jurisdictions": ["EU"],
                "allowed": True,
                "reason": "rows stay in the EU",
            },
        ),
        (
            "residency.decided",
            {
                **job,
                "step": "input-2",
                "site": "ch-zurich",
                "site_jurisdiction": "CH",
                "data_jurisdiction": "CH",
                "kind": "process_rows",
                "allowed_jurisdictions": ["CH"],
                "allowed": True,
                "reason": "rows stay in CH",
            },
        ),
        ("budget.reserved", {**job, "dataset": "dataset:1", "epsilon": "1", "delta": "0"}),
        ("budget.reserved", {**job, "dataset": "dataset:2", "epsilon": "1", "delta": "0"}),
        ("key.released", {**job, "dataset": "dataset:1", "site": "eu-frankfurt"}),
        (
            "attestation.verified",
            {
                **job,
                "kind": "hardware",
                "measurements": {"pcr0": "ab"},
                "evidence_sha256": "e" * 64,
                "reason": "",
            },
        ),
        ("job.started", {**job, "attempt": 1, "reason": ""}),
        ("budget.spent", {**job, "dataset": "dataset:1", "epsilon": "1", "delta": "0"}),
        ("budget.spent", {**job, "dataset": "dataset:2", "epsilon": "1", "delta": "0"}),
        (
            "result.released",
            {
                **job,
                "query": "query:7",
                "receivers": [PHARMA],
                "result_commitment": "f" * 64,
                "mechanism": "mpc",
                "epsilon": "1",
            },
        ),
        ("job.succeeded", {**job, "attempt": 1, "reason": ""}),
    ]


def index_of(run: Run, kind: str, nth: int = 0) -> int:
    return [i for i, (k, _) in enumerate(run) if k == kind][nth]


def mutate(change: Callable[[Run], None], run: Run | None = None, *, sign: bool = True) -> Run:
    """A copy of the run changed by `change`; its decisions signed again (as an organisation
    would sign what it decided), unless `sign` is False (a forgery)."""
    run = copy.deepcopy(run or happy_run())
    change(run)
    return sign_decisions(run) if sign else run


def as_bodies(run: Run, *, log: str = "room/1", start: datetime | None = None) -> list[dict]:
    """The events as recorded, one minute apart (for the verifier's in-process checks)."""
    start = start or datetime.now(UTC)
    return [
        {
            "log": log,
            "seq": i,
            "time": iso(start + timedelta(minutes=i)),
            "type": kind,
            "actor": None,
            "subject": "room:1",
            "data": data,
            "attachments": [],
        }
        for i, (kind, data) in enumerate(run)
    ]


def record_run(log: str, run: Run) -> None:
    with transaction.atomic():
        for kind, data in run:
            record_event(log=log, type=kind, actor=None, subject=f"room:{log[5:]}", data=data)
