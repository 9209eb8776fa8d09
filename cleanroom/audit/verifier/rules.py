"""The clean room's domain rules over a room log (:class:`DomainRules`) and what the log commits
to of a released result (:func:`result_commitment`, :func:`check_opening`); what an approval
signs and how it is checked is approvals.py.

The event types the rules read are those of the audit vocabulary (cleanroom/audit/events.py);
tests/audit/test_vocabulary.py holds them, and the fields the rules require, to it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from . import VerificationError
from .approvals import PinnedCredential, approval_message, verify_evidence
from .notes import strict_b64decode


def _field(data: dict, name: str, where: str) -> Any:
    if not isinstance(data, dict) or name not in data:
        raise VerificationError(f"{where} lacks the field {name!r}")
    return data[name]


def _decimal(value: Any, where: str) -> Decimal:
    if not isinstance(value, str):
        raise VerificationError(f"{where}: {value!r} is not a decimal string")
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        raise VerificationError(f"{where}: {value!r} is not a decimal string") from exc
    if not number.is_finite() or number < 0:
        raise VerificationError(f"{where}: {value!r} is not a non-negative decimal")
    return number


def _time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise VerificationError(f"{where}: {value!r} is not a time")
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise VerificationError(f"{where}: {value!r} is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        raise VerificationError(f"{where}: {value!r} has no time zone")
    return moment


# The event types the rules read, and the fields of each one's data they need: an event that
# lacks one is refused before any rule runs. The types and fields are the vocabulary's
# (cleanroom/audit/events.py), which tests/audit/test_vocabulary.py holds this table to.
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "query.submitted": ("query", "digest", "datasets", "required_approvers", "receivers"),
    "query.approved": ("query", "digest", "organization", "approval"),
    "query.rejected": ("query", "digest", "organization", "approval"),
    "query.approval_revoked": ("query", "organization"),
    "query.expired": ("query",),
    "query.superseded": ("query",),
    "job.dispatched": ("job", "query"),
    "residency.decided": ("job", "site", "allowed"),
    "key.released": ("job", "site"),
    "room.dataset_contributed": ("dataset", "total_epsilon"),
    "budget.reserved": ("job", "dataset", "epsilon"),
    "budget.refunded": ("job", "dataset", "epsilon"),
    "result.released": ("job", "query", "receivers"),
    "attestation.verified": ("kind",),
    "room.participation_suspended": ("organization",),
    "room.participation_resumed": ("organization",),
    "dataset.suspended": ("dataset",),
    "dataset.resumed": ("dataset",),
}


class DomainRules:
    """The clean room's rules over a room log, fed one event at a time in log order.

    - every ``query.approved`` and ``query.rejected`` carries the owner's own evidence (a
      passkey's WebAuthn assertion or a machine key's signature over the approval message,
      approvals.py), checked against the credentials the trust file pins for that
      organisation, or else the credential the event names; no assertion counts twice;
    - every ``job.dispatched`` follows a ``query.submitted`` of its query with the same digest,
      whose ``required_approvers`` include every owner of the datasets it reads, and a
      ``query.approved`` of that digest by each of them, not rejected or revoked since, with
      approvals and dispatch before the query's ``expires_at``, and the query neither expired
      nor superseded;
    - every ``residency.decided`` of a dispatched job that allowed a step did so with the
      site's jurisdiction among the allowed ones; a refused step got no ``key.released``;
    - per dataset, reserved minus refunded ε (and δ) never exceeds the total budget of its
      latest ``room.dataset_contributed``; no refund exceeds its reservation;
    - ``result.released`` goes only to receivers of its query, for a dispatched job;
    - ``attestation.verified`` is hardware-backed, unless simulated TEEs are allowed;
    - while a dataset is suspended, or its owner's participation in the room is (from
      ``dataset.suspended`` or ``room.participation_suspended`` until it is resumed), no job
      reading it is dispatched and no key of it is released.

    :meth:`feed` and :meth:`finish` raise VerificationError naming the first event that breaks
    a rule. The state kept is per query, job and dataset, not per event.
    """

    def __init__(
        self,
        *,
        allow_simulated_tee: bool = False,
        approver_credentials: dict[str, list[PinnedCredential]] | None = None,
    ) -> None:
        self.allow_simulated_tee = allow_simulated_tee
        # Organisation -> the credentials pinned for it, or None to take each approval's
        # credential from the event itself (the log, signed by the log key, then vouches for it).
        self.approver_credentials = approver_credentials
        self.signatures_seen: dict[str, int] = {}  # an approval's signature -> its event
        self.submissions: dict[str, dict] = {}
        self.decisions: dict[str, dict[str, tuple[str, str, datetime, int]]] = {}
        self.closed: dict[str, tuple[str, int]] = {}
        self.dispatched: dict[str, str] = {}  # job -> query
        self.residency: list[tuple[int, dict]] = []
        self.keys_released: list[tuple[int, str, str]] = []  # (index, job, site)
        self.totals: dict[str, tuple[Decimal, Decimal]] = {}
        self.charged: dict[str, list[Decimal]] = {}
        self.reserved: dict[tuple[str, str], list[Decimal]] = {}
        self.released: dict[str, dict] = {}  # job -> its result.released data
        self.owners: dict[str, str] = {}  # dataset -> its owner, as contributed
        self.suspended: dict[str, int] = {}  # dataset or owner organisation -> event index

    def feed(self, i: int, event: dict) -> None:
        kind = event.get("type")
        if not isinstance(kind, str) or kind not in REQUIRED_FIELDS:
            return  # no rule reads this type
        required = REQUIRED_FIELDS[kind]
        data = event.get("data") or {}
        where = f"event {i} ({kind})"
        for name in required:
            _field(data, name, where)
        if kind == "query.submitted":
            query = data["query"]
            self.submissions[query] = data
            self.decisions[query] = {}
            self.closed.pop(query, None)
            approvers = set(data["required_approvers"])
            for dataset in data["datasets"]:
                owner = _field(dataset, "owner", where)
                if owner not in approvers:
                    raise VerificationError(
                        f"{where}: {query} does not require the approval of {owner}, "
                        f"owner of {dataset.get('dataset')}"
                    )
        elif kind in ("query.approved", "query.rejected", "query.approval_revoked"):
            query = data["query"]
            organization = data["organization"]
            if kind != "query.approval_revoked":
                _check_approval(
                    i, where, kind, data, self.approver_credentials, self.signatures_seen
                )
            self.decisions.setdefault(query, {})[organization] = (
                kind,
                data.get("digest", ""),
                _time(event.get("time"), where),
                i,
            )
        elif kind in ("query.expired", "query.superseded"):
            self.closed[data["query"]] = (kind, i)
        elif kind == "job.dispatched":
            job = data["job"]
            query = data["query"]
            _check_dispatch(
                i, where, event, data, job, query, self.submissions, self.decisions, self.closed
            )
            for dataset in self.submissions[query]["datasets"]:
                self._check_not_suspended(where, dataset.get("dataset"), f"{job} was dispatched")
            self.dispatched[job] = query
        elif kind == "residency.decided":
            self.residency.append((i, data))
        elif kind == "key.released":
            self.keys_released.append((i, data["job"], data["site"]))
            self._check_not_suspended(
                where, data.get("dataset"), f"a key of {data.get('dataset')} was released"
            )
        elif kind in ("dataset.suspended", "room.participation_suspended"):
            self.suspended[data.get("dataset") or data["organization"]] = i
        elif kind in ("dataset.resumed", "room.participation_resumed"):
            self.suspended.pop(data.get("dataset") or data["organization"], None)
        elif kind == "room.dataset_contributed":
            if "owner" in data:
                self.owners[data["dataset"]] = data["owner"]
            self.totals[data["dataset"]] = (
                _decimal(data["total_epsilon"], where),
                _decimal(data.get("total_delta", "0"), where),
            )
        elif kind in ("budget.reserved", "budget.refunded"):
            _check_budget(i, where, kind, data, self.totals, self.charged, self.reserved)
        elif kind == "result.released":
            job = data["job"]
            query = data["query"]
            if job not in self.dispatched:
                raise VerificationError(f"{where}: a result of {job}, which was never dispatched")
            self.released[job] = data
            allowed = set(self.submissions[self.dispatched[job]]["receivers"])
            for receiver in data["receivers"]:
                if receiver not in allowed:
                    raise VerificationError(
                        f"{where}: the result of {job} went to {receiver}, not a receiver "
                        f"approved for {query}"
                    )
        elif kind == "attestation.verified":
            tee = data["kind"]
            if tee == "simulated" and not self.allow_simulated_tee:
                raise VerificationError(
                    f"{where}: {data.get('job')} ran on a simulated TEE, not hardware-backed "
                    "(add 'allow-simulated-tee' to the trust file to accept that)"
                )
            if tee not in ("hardware", "simulated"):
                raise VerificationError(f"{where}: unknown attestation kind {tee!r}")

    def _check_not_suspended(self, where: str, dataset: str | None, what: str) -> None:
        for suspended in (dataset, self.owners.get(dataset or "")):
            if suspended in self.suspended:
                raise VerificationError(
                    f"{where}: {what} while {suspended} was suspended "
                    f"(event {self.suspended[suspended]})"
                )

    def finish(self) -> None:
        """The rules that need the whole log: residency of jobs dispatched after deciding."""
        for i, data in self.residency:
            where = f"event {i} (residency.decided)"
            job = data["job"]
            if job not in self.dispatched:
                continue  # refused before dispatch: the job never ran
            site = data["site"]
            if data["allowed"] is True:
                jurisdiction = _field(data, "site_jurisdiction", where)
                allowed = _field(data, "allowed_jurisdictions", where)
                if jurisdiction not in allowed:
                    raise VerificationError(
                        f"{where}: step {data.get('step')} of {job} ran at {site} in "
                        f"{jurisdiction}, but its data allows only "
                        f"{', '.join(allowed) or 'nowhere'}"
                    )
            else:
                for k, key_job, key_site in self.keys_released:
                    if k > i and key_job == job and key_site == site:
                        raise VerificationError(
                            f"event {k} (key.released): a data key of {job} went to {site} "
                            f"after residency refused that site (event {i})"
                        )


def check_domain_rules(
    events: Iterable[dict],
    *,
    allow_simulated_tee: bool = False,
    approver_credentials: dict[str, list[PinnedCredential]] | None = None,
) -> None:
    """Check :class:`DomainRules` over a whole room log, in log order."""
    rules = DomainRules(
        allow_simulated_tee=allow_simulated_tee, approver_credentials=approver_credentials
    )
    for i, event in enumerate(events):
        rules.feed(i, event)
    rules.finish()


_DECISIONS = {"query.approved": "approve", "query.rejected": "reject"}


RESULT_COMMITMENT = "cleanroom-result-commitment/v1"
RESULT_OPENING = "cleanroom-result-opening/v1"


def result_commitment(salt: bytes, content: bytes, name: str = "") -> str:
    """The commitment the log holds to a released result (`name` empty) or to one of its files:
    SHA-256 over the format, a secret 256-bit salt, the name and the exact bytes released. The
    salt travels only inside the encrypted result, so only its receivers can open it; without
    the salt the commitment says nothing, even of a result small enough to enumerate."""
    if len(salt) != 32:
        raise VerificationError("a result commitment's salt is 32 bytes")
    header = f"{RESULT_COMMITMENT}\n{name}\n".encode()
    return hashlib.sha256(header + salt + content).hexdigest()


def check_opening(opening: dict, released: dict[str, dict]) -> str:
    """Check a receiver's opening of a result (the exact bytes released, the salt, and any
    files) against the `result.released` event of its job; returns the job, or raises."""
    if not isinstance(opening, dict) or opening.get("format") != RESULT_OPENING:
        raise VerificationError(f"the opening is not {RESULT_OPENING}")
    job = opening.get("job")
    if not isinstance(job, str):
        raise VerificationError("the opening names no job")
    event = released.get(job)
    if event is None:
        raise VerificationError(f"the bundle holds no released result of {job}")
    salt = _hex(opening.get("salt"), "the opening's salt")
    content = strict_b64decode(str(opening.get("result", "")), "the opened result")
    if result_commitment(salt, content) != event.get("result_commitment"):
        raise VerificationError(f"the result of {job} does not match its commitment in the log")
    committed = event.get("files") or {}
    files = opening.get("files") or {}
    for name, encoded in sorted(files.items()):
        content = strict_b64decode(str(encoded), f"the opened file {name}")
        if name not in committed or result_commitment(salt, content, name) != committed[name]:
            raise VerificationError(f"file {name} of {job} does not match its commitment")
    return job


def _hex(value: Any, what: str) -> bytes:
    try:
        return bytes.fromhex(str(value))
    except ValueError:
        raise VerificationError(f"{what} is not hexadecimal") from None


def _check_approval(i, where, kind, data, pinned, seen) -> None:
    query, organization = data["query"], data["organization"]
    if pinned is not None and not pinned.get(organization):
        raise VerificationError(f"{where}: the trust file pins no credential for {organization}")
    message = approval_message(query, data["digest"], organization, _DECISIONS[kind])
    try:
        verify_evidence(
            data["approval"],
            message=message,
            organization=organization,
            pinned=None if pinned is None else pinned[organization],
        )
    except VerificationError as exc:
        raise VerificationError(f"{where}: {organization} on {query}: {exc}") from None
    signature = str(data["approval"]["signature"])
    if signature in seen:
        raise VerificationError(
            f"{where}: {organization}'s assertion on {query} replays event {seen[signature]}"
        )
    seen[signature] = i


def _check_dispatch(i, where, event, data, job, query, submissions, decisions, closed) -> None:
    submission = submissions.get(query)
    if submission is None:
        raise VerificationError(f"{where}: {job} ran {query}, which was never submitted")
    digest = submission["digest"]
    if data.get("digest") != digest:
        raise VerificationError(
            f"{where}: {job} ran {query} with digest {data.get('digest')}, "
            f"but the submitted digest is {digest}"
        )
    if query in closed:
        what, k = closed[query]
        raise VerificationError(f"{where}: {job} ran {query} after {what} (event {k})")
    dispatched_at = _time(event.get("time"), where)
    expires = submission.get("expires_at")
    expires_at = _time(expires, where) if expires else None
    if expires_at is not None and dispatched_at >= expires_at:
        raise VerificationError(f"{where}: {job} ran {query} after it expired at {expires}")
    for organization in submission["required_approvers"]:
        decision = decisions.get(query, {}).get(organization)
        if decision is None:
            raise VerificationError(
                f"{where}: {job} ran {query} without the approval of {organization}"
            )
        what, approved_digest, approved_at, k = decision
        if what != "query.approved":
            raise VerificationError(
                f"{where}: {job} ran {query} although {organization}'s approval was "
                f"{'revoked' if what == 'query.approval_revoked' else 'a rejection'} (event {k})"
            )
        if approved_digest != digest:
            raise VerificationError(
                f"{where}: {organization} approved digest {approved_digest} of {query}, "
                f"not the digest {digest} that ran"
            )
        if expires_at is not None and approved_at >= expires_at:
            raise VerificationError(
                f"{where}: {organization} approved {query} (event {k}) after it expired"
            )


def _check_budget(i, where, kind, data, totals, charged, reserved) -> None:
    dataset = data["dataset"]
    job = data["job"]
    epsilon = _decimal(data["epsilon"], where)
    delta = _decimal(data.get("delta", "0"), where)
    if dataset not in totals:
        raise VerificationError(f"{where}: budget of {dataset}, never contributed to this room")
    spent = charged.setdefault(dataset, [Decimal(0), Decimal(0)])
    held = reserved.setdefault((job, dataset), [Decimal(0), Decimal(0)])
    sign = 1 if kind == "budget.reserved" else -1
    for n, amount in enumerate((epsilon, delta)):
        spent[n] += sign * amount
        held[n] += sign * amount
    if held[0] < 0 or held[1] < 0:
        raise VerificationError(f"{where}: {job} refunded more of {dataset} than it reserved")
    total_epsilon, total_delta = totals[dataset]
    if spent[0] > total_epsilon:
        raise VerificationError(
            f"{where}: {dataset} is charged ε {spent[0]} out of a budget of {total_epsilon}"
        )
    if spent[1] > total_delta:
        raise VerificationError(
            f"{where}: {dataset} is charged δ {spent[1]} out of a budget of {total_delta}"
        )
