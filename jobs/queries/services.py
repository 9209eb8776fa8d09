"""Changes to joint queries: drafts, submission, approvals, revocation, expiry, and the run gate.

A submitted query version is frozen: its canonical form (jobs/queries/canonical.py) is hashed into
its digest, and every approval is the owner's own, by one of its passkeys or a machine key it
holds. Editing makes a new version with no approvals. Every transition writes its audit event."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from cleanroom.audit.log import record_room_event
from cleanroom.audit.verifier.canonical import canonical_json
from cleanroom.errors import DomainError
from jobs.models import Approval, Query, Room
from jobs.permissions import Permission, require, require_query_editor
from jobs.planning.planner import Plan, plan_query
from jobs.queries.canonical import approval_message, canonical_form, digest_of, verify_approval
from parties.credentials import decision_credential
from parties.models import Organization

EDITABLE = (
    "title",
    "purpose",
    "sql",
    "requested_mechanism",
    "epsilon",
    "delta",
    "expires_at",
    "output_kind",
    "synthetic_method",
    "synthetic_rows",
)


# Versions that a newer submitted version replaces.
REPLACEABLE = (Query.Status.PENDING, Query.Status.APPROVED)


class QueryRefused(DomainError):
    code = "query_refused"


def _record(query: Query, type: str, by: User | None, **data: Any) -> None:
    record_room_event(
        query.room_id,
        type,
        by=by,
        subject=f"query:{query.pk}",
        query=f"query:{query.pk}",
        **data,
    )


def plan_for(query: Query) -> Plan:
    return plan_query(
        room=query.room,
        sql=query.sql,
        mechanism=query.requested_mechanism,
        epsilon=query.epsilon,
        delta=query.delta,
        receivers=list(query.receivers.order_by("slug")),
        output_kind=query.output_kind,
        synthetic_method=query.synthetic_method,
        synthetic_rows=query.synthetic_rows,
    )


def _check_fields(values: dict[str, Any]) -> None:
    if not str(values.get("title", "")).strip():
        raise QueryRefused("Give the query a title.")
    if not str(values.get("purpose", "")).strip():
        raise QueryRefused("State the purpose: every owner sees it before approving.")
    if values["expires_at"] <= timezone.now():
        raise QueryRefused("The expiry must be in the future.")
    synthetic = values.get("output_kind") == Query.OutputKind.SYNTHETIC
    # SDV's methods spend no ε (they are not differentially private), so theirs may be 0.
    if Decimal(values["epsilon"]) < 0 or (
        Decimal(values["epsilon"]) == 0
        and not (synthetic and values.get("synthetic_method") != Query.SyntheticMethod.DP_MARGINALS)
    ):
        raise QueryRefused("ε must be positive.")
    if synthetic and not values.get("synthetic_rows"):
        raise QueryRefused("Say how many synthetic rows the extract should have.")
    if not synthetic and (values.get("synthetic_method") or values.get("synthetic_rows")):
        raise QueryRefused("A method and rows are given for synthetic extracts only.")
    if Decimal(values.get("delta") or 0) < 0:
        raise QueryRefused("δ cannot be negative.")


def save_draft(
    *,
    room: Room,
    acting_for: Organization,
    by: User,
    receivers: list[Organization],
    query: Query | None = None,
    **values: Any,
) -> Query:
    """Create a draft for `acting_for`, or change one in place (for its author organisation,
    whoever `acting_for` names); submitted versions are changed by `revise_query`."""
    if query is None:
        require(by, Permission.PROPOSE_QUERY, room=room, organization=acting_for)
    else:
        require_query_editor(by, query)
    unknown = set(values) - set(EDITABLE)
    if unknown:
        raise QueryRefused(f"Unknown query fields: {', '.join(sorted(unknown))}.")
    with transaction.atomic():
        if query is None:
            query = Query(
                room=room, lineage=uuid.uuid4(), author=by, author_organization=acting_for
            )
        else:
            query = Query.objects.select_for_update().get(pk=query.pk)
            if query.room_id != room.pk:
                raise QueryRefused("This query belongs to another room.")
            if query.status != Query.Status.DRAFT:
                raise QueryRefused(
                    "Only a draft changes in place; revise the query instead.",
                    code="not_a_draft",
                    conflict=True,
                )
        for name, value in values.items():
            setattr(query, name, value)
        _check_fields({name: getattr(query, name) for name in EDITABLE})
        query.save()
        query.receivers.set(receivers)
    return query


def submit_query(*, query: Query, by: User) -> Query:
    """Freeze a draft for approval; refused, with every failed check, if the plan fails."""
    with transaction.atomic():
        # Lock every version of the lineage at once, in primary-key order: decisions lock a
        # single version, so the two can never wait on each other in opposite orders.
        versions = {
            version.pk: version
            for version in Query.objects.select_for_update(of=("self",))
            .select_related("room")
            .filter(lineage=query.lineage)
            .order_by("pk")
        }
        query = versions[query.pk]
        require_query_editor(by, query)
        if query.status != Query.Status.DRAFT:
            raise QueryRefused(
                f"This version is {query.get_status_display().lower()}, not a draft.",
                code="not_a_draft",
                conflict=True,
            )
        plan = plan_for(query)
        if not plan.ok:
            raise QueryRefused(
                "The query cannot be submitted: "
                + " ".join(check.message for check in plan.failed()),
                code="plan_failed",
            )
        assert plan.mechanism is not None  # a plan passes only with a mechanism chosen
        canonical = canonical_form(query, plan)
        query.mechanism = plan.mechanism
        query.canonical = canonical
        query.digest = digest_of(canonical)
        query.plan = plan.as_dict()
        query.status = Query.Status.PENDING
        query.submitted_at = timezone.now()
        query.save()
        for older in versions.values():
            if older.pk == query.pk or older.status not in REPLACEABLE:
                continue
            older.status = Query.Status.SUPERSEDED
            older.save(update_fields=["status"])
            _record(older, "query.superseded", by, superseded_by=f"query:{query.pk}")
        _record(
            query,
            "query.submitted",
            by,
            lineage=str(query.lineage),
            version=query.version,
            digest=query.digest,
            datasets=[
                {
                    **item,
                    "owner": f"org:{c.dataset.organization_id}",
                    "jurisdiction": c.dataset.jurisdiction.code,
                }
                for item, c in zip(
                    canonical["datasets"],
                    sorted(plan.contributions, key=lambda c: c.dataset.qualified_name),
                    strict=True,
                )
            ],
            required_approvers=[f"org:{org.pk}" for org in plan.required_approvers],
            receivers=canonical["receivers"],
            epsilon=canonical["epsilon"],
            delta=canonical["delta"],
            mechanism=plan.mechanism,
            output_kind=query.output_kind,
            **({"synthetic": canonical["synthetic"]} if "synthetic" in canonical else {}),
            expires_at=canonical["expires_at"],
            residency=[d for step in query.plan["steps"] for d in step["decisions"]],
            sql_sha256=hashlib.sha256(query.sql.encode()).hexdigest(),
            # The bundle carries the exact text approved, and the canonical form it hashes.
            attach={"query.sql": query.sql.encode(), "query.json": canonical_json(canonical)},
        )
    return query


def revise_query(
    *, query: Query, by: User, receivers: list[Organization] | None = None, **changes: Any
) -> Query:
    """A new draft version of a submitted query, with no approvals; the old version stays
    as it is until the new one is submitted."""
    source = Query.objects.select_related("room").get(pk=query.pk)
    if source.status == Query.Status.DRAFT:
        raise QueryRefused(
            "This version is still a draft: change it in place.", code="a_draft", conflict=True
        )
    latest = Query.objects.filter(lineage=source.lineage).latest("version")
    if latest.status == Query.Status.DRAFT:
        raise QueryRefused(
            f"Version {latest.version} is already a draft of this query.",
            code="draft_exists",
            conflict=True,
        )
    values = {name: getattr(source, name) for name in EDITABLE}
    values.update(changes)
    try:
        with transaction.atomic():
            draft = Query(
                room=source.room,
                lineage=source.lineage,
                version=latest.version + 1,
                author=by,
                author_organization=source.author_organization,
            )
            require_query_editor(by, source)
            for name, value in values.items():
                setattr(draft, name, value)
            _check_fields(values)
            draft.save()
            draft.receivers.set(list(source.receivers.all()) if receivers is None else receivers)
    except IntegrityError:
        raise QueryRefused(
            "Someone else revised this query at the same time; reload it.",
            code="conflict",
            conflict=True,
        ) from None
    return draft


def _expire_if_due(query: Query, now: datetime) -> bool:
    if query.status in REPLACEABLE and query.expires_at <= now:
        query.status = Query.Status.EXPIRED
        query.save(update_fields=["status"])
        _record(query, "query.expired", None, expires_at=query.expires_at.isoformat())
        return True
    return False


def decide_query(
    *,
    query: Query,
    organization: Organization,
    by: User,
    approve: bool,
    response: Any,
    comment: str = "",
) -> Approval:
    """An owner organisation approves or rejects this exact version; any rejection rejects it.
    `response` is the owner's answer to the decision's challenge: a passkey's assertion or a
    machine key's signature (parties.credentials.decision_credential)."""
    if expire_queries(pk=query.pk):
        raise QueryRefused(
            "This query has expired; the analyst can submit a new version.", code="expired"
        )
    with transaction.atomic():
        # The row lock serialises decisions, revisions and expiry of this version.
        query = (
            Query.objects.select_for_update(of=("self",)).select_related("room").get(pk=query.pk)
        )
        require(by, Permission.DECIDE_QUERY, room=query.room, organization=organization)
        if query.status != Query.Status.PENDING:
            raise QueryRefused(
                f"This version is {query.get_status_display().lower()}: it takes no decisions.",
                code="not_pending",
                conflict=True,
            )
        if organization.slug not in _required_approvers(query):
            raise QueryRefused(
                f"{organization.name} owns no dataset this query reads.", code="not_an_approver"
            )
        if query.approvals.filter(organization=organization, revoked_at__isnull=True).exists():
            raise QueryRefused(
                f"{organization.name} has already decided on this version.",
                code="already_decided",
                conflict=True,
            )
        decision = Approval.Decision.APPROVE if approve else Approval.Decision.REJECT
        credential, proof = decision_credential(
            organization=organization,
            by=by,
            message=approval_message(query, organization, decision),
            response=response,
        )
        replayed = Approval.objects.filter(evidence__signature=proof["signature"]).first()
        if replayed is not None:
            raise QueryRefused(
                f"This assertion already decided {replayed.query}: each decision needs its own.",
                code="replayed",
            )
        approval = Approval.objects.create(
            query=query,
            organization=organization,
            decision=decision,
            decided_by=by,
            comment=comment,
            digest=query.digest,
            credential=credential,
            evidence=proof,
            decided_at=timezone.now(),
        )
        _record(
            query,
            "query.approved" if approve else "query.rejected",
            by,
            digest=query.digest,
            organization=f"org:{organization.pk}",
            approval=proof,
            comment_sha256=hashlib.sha256(comment.encode()).hexdigest(),
        )
        if not approve:
            query.status = Query.Status.REJECTED
        elif set(_live_approvers(query)) >= set(_required_approvers(query)):
            query.status = Query.Status.APPROVED
        query.save(update_fields=["status"])
    return approval


def _required_approvers(query: Query) -> list[str]:
    plan = query.plan
    assert plan is not None  # a pending version was submitted, with its plan
    return plan["required_approvers"]


def _live_approvers(query: Query) -> list[str]:
    return list(
        query.approvals.filter(
            decision=Approval.Decision.APPROVE, revoked_at__isnull=True
        ).values_list("organization__slug", flat=True)
    )


def revoke_approval(*, approval: Approval, by: User) -> Approval:
    """Withdraw an approval before the query runs. An approved query loses its approval and
    needs a new version; a pending one waits for that owner again."""
    with transaction.atomic():
        query = (
            Query.objects.select_for_update(of=("self",))
            .select_related("room")
            .get(pk=approval.query_id)
        )
        approval = Approval.objects.select_for_update().get(pk=approval.pk)
        require(by, Permission.DECIDE_QUERY, room=query.room, organization=approval.organization)
        if approval.revoked_at or approval.decision != Approval.Decision.APPROVE:
            raise QueryRefused(
                "Only a standing approval can be revoked.", code="not_revocable", conflict=True
            )
        if query.status not in REPLACEABLE:
            raise QueryRefused(
                f"This version is {query.get_status_display().lower()}: too late to revoke.",
                code="not_revocable",
                conflict=True,
            )
        approval.revoked_at = timezone.now()
        approval.revoked_by = by
        approval.save(update_fields=["revoked_at", "revoked_by"])
        if query.status == Query.Status.APPROVED:
            query.status = Query.Status.REVOKED
            query.save(update_fields=["status"])
        _record(
            query,
            "query.approval_revoked",
            by,
            organization=f"org:{approval.organization_id}",
            digest=query.digest,
        )
    return approval


def expire_queries(now: datetime | None = None, pk: int | None = None) -> int:
    """Expire every pending or approved query past its expiry (run periodically, and before
    a decision on one query), each in its own transaction so the expiry is kept."""
    now = now or timezone.now()
    due = Query.objects.filter(status__in=REPLACEABLE, expires_at__lte=now)
    if pk is not None:
        due = due.filter(pk=pk)
    expired = 0
    for due_pk in due.values_list("pk", flat=True):
        with transaction.atomic():
            expired += _expire_if_due(Query.objects.select_for_update().get(pk=due_pk), now)
    return expired


def check_runnable(query: Query, *, running: bool = False) -> Plan:
    """The gate before a job may start: approved by every owner of every dataset it reads, for
    exactly this version, with valid signatures, unexpired, and its plan still passing.
    Refuses with the first unmet condition. The worker asks again (`running`) when an attempt
    starts; the budget is then enforced by the reservation, under its row locks."""
    expected = Query.Status.RUNNING if running else Query.Status.APPROVED
    if query.status != expected:
        raise QueryRefused(
            f"The query is {query.get_status_display().lower()}, not approved.",
            code="not_approved",
            conflict=True,
        )
    if query.expires_at <= timezone.now():
        raise QueryRefused("The query's approvals have expired.", code="expired")
    if query.canonical is None or digest_of(query.canonical) != query.digest:
        raise QueryRefused(
            "The query changed after submission: its digest no longer matches.",
            code="digest_mismatch",
        )
    plan = plan_for(query)
    failed = [c for c in plan.failed() if not (running and c.name == "budget")]
    if failed:
        raise QueryRefused(
            "The plan no longer passes: " + " ".join(c.message for c in failed), code="plan_failed"
        )
    if digest_of(canonical_form(query, plan)) != query.digest:
        raise QueryRefused(
            "The query, its datasets or their policies changed since approval.",
            code="digest_mismatch",
        )
    approvals = {
        a.organization.slug: a
        for a in query.approvals.filter(
            revoked_at__isnull=True, decision=Approval.Decision.APPROVE
        ).select_related("organization", "query")
    }
    for org in plan.required_approvers:
        approval = approvals.get(org.slug)
        if approval is None:
            raise QueryRefused(f"{org.name} has not approved this version.", code="unapproved")
        if not verify_approval(approval):
            raise QueryRefused(
                f"{org.name}'s approval is not a valid assertion or signature by one of its "
                "live credentials for this version.",
                code="bad_signature",
            )
    return plan
