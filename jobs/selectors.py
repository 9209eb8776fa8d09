"""Reads about rooms, scoped to the caller's organisations."""

from __future__ import annotations

import difflib
from decimal import Decimal
from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery, Sum
from django.shortcuts import get_object_or_404

from dataplane.mechanisms import Stage
from jobs.ledger import balance, budget_check, plain
from jobs.models import BudgetEntry, JobStep, Query, Room, RoomDataset, RoomMembership
from jobs.permissions import require_room_reader
from parties.models import Dataset, Organization
from parties.selectors import organizations_of


def rooms_for(user) -> QuerySet[Room]:
    """Rooms where one of the caller's organisations is a member or has a pending invitation."""
    return (
        Room.objects.filter(
            memberships__organization__in=organizations_of(user),
            memberships__status__in=[RoomMembership.Status.ACTIVE, RoomMembership.Status.INVITED],
        )
        .distinct()
        .select_related("created_by_organization")
    )


def get_room_for_member(user, slug: str) -> Room:
    """A room the caller's organisation is in or invited to; outsiders get a 404."""
    return get_object_or_404(rooms_for(user), slug=slug)


def get_room_for_reader(user, slug: str) -> Room:
    """A room whose queries, jobs and budget the caller reads: outsiders get a 404, an
    invitee that has not joined yet a 403 (jobs/permissions.py)."""
    room = get_room_for_member(user, slug)
    require_room_reader(user, room)
    return room


def invitations_for(user) -> QuerySet[RoomMembership]:
    return RoomMembership.objects.filter(
        organization__in=organizations_of(user),
        organization__memberships__user=user,
        organization__memberships__role="owner",
        status=RoomMembership.Status.INVITED,
    ).select_related("room", "organization")


def contributions_of(room: Room) -> QuerySet[RoomDataset]:
    return room.contributions.select_related(
        "dataset__organization", "dataset__jurisdiction", "version", "policy"
    )


def queries_of(room: Room) -> QuerySet[Query]:
    """The latest version of each query in the room, newest first."""
    latest = (
        Query.objects.filter(room=room, lineage=OuterRef("lineage"))
        .order_by("-version")
        .values("pk")[:1]
    )
    return (
        Query.objects.filter(room=room, pk=Subquery(latest))
        .select_related("author", "author_organization")
        .order_by("-created_at")
    )


def get_query_for_member(user, room: Room, pk: int) -> Query:
    return get_object_or_404(
        Query.objects.select_related("room", "author_organization"), room=room, pk=pk
    )


def inbox_for(user) -> list[tuple[Query, Organization]]:
    """Pending versions waiting for a decision from an organisation the caller owns data for."""
    owner_orgs = {
        org.slug: org
        for org in organizations_of(user).filter(memberships__user=user, memberships__role="owner")
    }
    waiting = []
    pending = (
        Query.objects.filter(
            status=Query.Status.PENDING,
            room__memberships__organization__in=owner_orgs.values(),
            room__memberships__status=RoomMembership.Status.ACTIVE,
        )
        .distinct()
        .select_related("room", "author", "author_organization")
        .order_by("submitted_at")
    )
    for query in pending:
        decided = set(
            query.approvals.filter(revoked_at__isnull=True).values_list(
                "organization__slug", flat=True
            )
        )
        if query.plan is None:
            raise ValueError(f"Query {query.pk} is pending approval but has no plan.")
        for slug in query.plan["required_approvers"]:
            if slug in owner_orgs and slug not in decided:
                waiting.append((query, owner_orgs[slug]))
    return waiting


def previous_version(query: Query) -> Query | None:
    return (
        Query.objects.filter(lineage=query.lineage, version__lt=query.version)
        .exclude(status=Query.Status.DRAFT)
        .order_by("-version")
        .first()
    )


def changes_since(query: Query, previous: Query | None) -> list[dict]:
    """What an owner needs to see of a revision: each changed field, and the text's diff."""
    if previous is None or not previous.canonical or not query.canonical:
        return []
    changes = []
    for name, new in query.canonical.items():
        old = previous.canonical.get(name)
        if name in ("version",) or old == new:
            continue
        change = {"field": name, "old": old, "new": new}
        if name == "sql":
            change["diff"] = list(
                difflib.unified_diff(
                    str(old).splitlines(),
                    str(new).splitlines(),
                    "previous",
                    "this version",
                    lineterm="",
                )
            )[2:]
        changes.append(change)
    return changes


def budget_of(room: Room) -> list[dict]:
    """Per dataset in the room: its one lifetime balance (spent, reserved and remaining ε over
    every room), what this room used of it, and this room's history. Other rooms' queries are
    not named: the room's members may not see them, only the ε they used."""
    rows = []
    for contribution in contributions_of(room):
        dataset = contribution.dataset
        funds = balance(dataset)
        spent = BudgetEntry.objects.filter(dataset=dataset, kind=BudgetEntry.Kind.SPEND).aggregate(
            total=Sum("epsilon")
        )["total"] or Decimal(0)
        entries = list(
            BudgetEntry.objects.filter(room=room, dataset=dataset)
            .select_related("query")
            .order_by("created_at", "pk")
        )
        history, used = [], Decimal(0)
        for entry in entries:
            if entry.kind == BudgetEntry.Kind.RESERVE:
                used += entry.epsilon
            elif entry.kind == BudgetEntry.Kind.REFUND:
                used -= entry.epsilon
            history.append(
                {
                    "at": entry.created_at,
                    "kind": entry.kind,
                    "epsilon": entry.epsilon,
                    "used": used,
                    "query": entry.query,
                }
            )
        total = funds.total_epsilon
        reserved = funds.used_epsilon - spent
        rows.append(
            {
                "contribution": contribution,
                "total": total,
                "spent": spent,
                "reserved": reserved,
                "remaining": funds.remaining_epsilon,
                "used_in_room": used,
                "used_elsewhere": funds.used_epsilon - used,
                "total_delta": funds.total_delta,
                "remaining_delta": funds.remaining_delta,
                "spent_percent": float(spent / total * 100) if total else 0,
                "reserved_percent": float(reserved / total * 100) if total else 0,
                "history": history,
            }
        )
    return rows


def plan_with_live_budget(query: Query) -> dict[str, Any] | None:
    """A submitted query's plan with each dataset's balance and budget check as they stand now,
    not as at submission: queries in this room or any other may have spent since. Only while
    the query waits to run (afterwards its own charge is in the balance); the charge and the
    per-query maximum stay as approved."""
    plan = query.plan
    waiting = query.status in (Query.Status.PENDING, Query.Status.APPROVED)
    if not waiting or not plan or not plan.get("ok") or not plan.get("datasets"):
        return plan
    private = not plan.get("synthetic") or plan["synthetic"].get("differentially_private", True)
    names = [d["name"] for d in plan["datasets"]]
    found = {
        dataset.qualified_name: dataset
        for dataset in Dataset.objects.select_related("organization").filter(
            organization__slug__in=[name.split(".")[0] for name in names],
            slug__in=[name.split(".")[1] for name in names],
        )
    }
    datasets, live = [], []
    for entry in plan["datasets"]:
        funds = balance(found[entry["name"]])
        ok, message = budget_check(
            entry["name"],
            funds,
            epsilon=Decimal(entry["epsilon"]),
            delta=Decimal(entry["delta"]),
            max_per_query=Decimal(entry["max_epsilon_per_query"]),
            private=private,
        )
        datasets.append(
            {
                **entry,
                "total_epsilon": plain(funds.total_epsilon),
                "remaining_epsilon": plain(funds.remaining_epsilon),
                "remaining_delta": plain(funds.remaining_delta),
                "fits": ok,
            }
        )
        live.append({"name": "budget", "ok": ok, "message": message})
    # A plan that could be submitted has exactly one budget check per dataset, in their order.
    replacements = iter(live)
    checks = [
        next(replacements) if check["name"] == "budget" else check for check in plan["checks"]
    ]
    return {
        **plan,
        "datasets": datasets,
        "checks": checks,
        "ok": all(check["ok"] for check in checks),
        "budget_as_of_now": True,
    }


def compute_steps(job_id: int) -> list[JobStep]:
    """An MPC job's compute parties, in party order."""
    return list(
        JobStep.objects.filter(job_id=job_id, kind=Stage.COMPUTE)
        .select_related("site__jurisdiction")
        .order_by("party")
    )


def input_steps(job_id: int) -> list[JobStep]:
    """An MPC job's input steps, one per dataset."""
    return list(
        JobStep.objects.filter(job_id=job_id, kind=Stage.INPUT)
        .select_related("site__jurisdiction", "dataset")
        .order_by("dataset_id")
    )
