"""Reads about queries: a room's queries, an inbox, versions, a plan with today's budget."""

from __future__ import annotations

import difflib
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.shortcuts import get_object_or_404

from jobs.budget.ledger import balance, budget_check, plain
from jobs.models import Query, Room, RoomMembership
from jobs.rooms.selectors import get_room_for_reader
from parties.models import Dataset, Organization
from parties.selectors import organizations_of


def get_query_for_member(user: User, room: Room, pk: int) -> Query:
    return get_object_or_404(
        Query.objects.select_related("room", "author_organization"), room=room, pk=pk
    )


def get_query_for_reader(user: User, slug: str, pk: int) -> Query:
    """A query of a room the caller reads (jobs/permissions.py: outsiders 404, invitees 403)."""
    return get_query_for_member(user, get_room_for_reader(user, slug), pk)


def inbox_for(user: User) -> list[tuple[Query, Organization]]:
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


def changes_since(query: Query, previous: Query | None) -> list[dict[str, Any]]:
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
