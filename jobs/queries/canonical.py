"""What every owner approves: a query version's canonical form, its digest, and the approval
message bound to it (cleanroom/audit/verifier/approvals.py), verified against the owner's
passkey or machine key. The platform holds no key that can make an approval."""

from __future__ import annotations

import hashlib
from typing import Any

from cleanroom.audit.verifier import approvals as evidence
from cleanroom.audit.verifier.canonical import canonical_json
from dataplane.privacy import terms
from jobs.models import Approval, Query
from jobs.planning.planner import Plan
from parties.models import Organization


def canonical_form(query: Query, plan: Plan) -> dict[str, Any]:
    """Everything an approval binds, the terms that set the noise included
    (dataplane.privacy.terms). Any change to any of it is a new version."""
    parsed = plan.parsed
    assert parsed is not None  # only a plan that passed is submitted, and it parsed the query
    uses = terms.uses_by_dataset(parsed)
    policies = {c.dataset.qualified_name: c.policy for c in plan.contributions}
    return {
        "format": terms.FORMAT,
        "room": f"room:{query.room_id}",
        "lineage": str(query.lineage),
        "version": query.version,
        "title": query.title,
        "purpose": query.purpose,
        "sql": query.sql,
        "mechanism": plan.mechanism,
        "output_kind": query.output_kind,
        **_synthetic_terms(query, plan),
        "epsilon": str(query.epsilon),
        "delta": str(query.delta),
        "receivers": sorted(f"org:{org.pk}" for org in query.receivers.all()),
        "expires_at": query.expires_at.isoformat(),
        "datasets": sorted(
            (
                {
                    "dataset": f"dataset:{c.dataset_id}",
                    "name": c.dataset.qualified_name,
                    "version": c.version.number,
                    "content_sha256": c.version.content_sha256,
                    "policy_version": c.policy.version,
                    **terms.dataset_terms(
                        plan.catalog[c.dataset.qualified_name],
                        used=uses[c.dataset.qualified_name],
                        rows_per_unit=c.policy.max_rows_per_unit,
                        min_group_size=c.policy.min_group_size,
                    ),
                }
                for c in plan.contributions
            ),
            key=lambda item: item["name"],
        ),
        "accountant": terms.accountant_terms(
            parsed=parsed,
            rows_per_unit=min(p.max_rows_per_unit for p in policies.values()),
            min_group_size=max(p.min_group_size for p in policies.values()),
            released=plan.measurements,
        ),
    }


def _synthetic_terms(query: Query, plan: Plan) -> dict[str, Any]:
    """A synthetic extract's method, rows and the cost charged are part of what is approved."""
    if query.output_kind != Query.OutputKind.SYNTHETIC:
        return {}
    assert plan.synthetic is not None  # the plan of a synthetic extract describes it
    return {
        "synthetic": {
            "method": query.synthetic_method,
            "rows": query.synthetic_rows,
            "differentially_private": plan.synthetic["differentially_private"],
            "charge": plan.synthetic["charge"],
        }
    }


def digest_of(canonical: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(canonical)).hexdigest()


def approval_message(query: Query, organization: Organization, decision: str) -> bytes:
    """What an owner's credential signs: the decision, bound to this version's digest."""
    return evidence.approval_message(
        f"query:{query.pk}", query.digest, f"org:{organization.pk}", decision
    )


def approval_challenge(query: Query, organization: Organization, decision: str) -> str:
    """The WebAuthn challenge of this decision, base64url, as the browser is handed it."""
    return evidence.b64url(
        evidence.approval_challenge(approval_message(query, organization, decision))
    )


def verify_approval(approval: Approval) -> bool:
    """Whether the approval is its organisation's: its evidence verifies, for this version and
    decision, under the live credential of that organisation it names."""
    credential = approval.credential
    if credential.removed_at is not None or credential.organization_id != approval.organization_id:
        return False
    if approval.digest != approval.query.digest:
        return False
    try:
        evidence.verify_evidence(
            approval.evidence,
            message=approval_message(approval.query, approval.organization, approval.decision),
            organization=f"org:{approval.organization_id}",
            pinned=[credential.pinned()],
        )
    except evidence.ApprovalError:
        return False
    return True
