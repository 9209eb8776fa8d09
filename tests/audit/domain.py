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

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.db import transaction

from cleanroom.audit.log import record_event
from cleanroom.audit.verifier.rules import approval_message

DIGEST = "d" * 64
CHARITE, USZ, PHARMA, OUTSIDER = "org:1", "org:2", "org:3", "org:9"

Run = list[tuple[str, dict]]


def organization_key(organization: str) -> Ed25519PrivateKey:
    """A fixed Ed25519 key per organisation id, so runs are reproducible."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(organization.encode()).digest())


def public_key_of(organization: str) -> bytes:
    return organization_key(organization).public_key().public_bytes_raw()


def sign_decisions(run: Run) -> Run:
    """Sign every approval and rejection of the run with its organisation's key, as
    `jobs.queries.decide_query` does with the key in the key service."""
    decisions = {"query.approved": "approve", "query.rejected": "reject"}
    for kind, data in run:
        if kind in decisions:
            key = organization_key(data["organization"])
            message = approval_message(
                data["query"], data["digest"], data["organization"], decisions[kind]
            )
            data["signature"] = base64.b64encode(key.sign(message)).decode()
            data["public_key"] = base64.b64encode(public_key_of(data["organization"])).decode()
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
