"""Reads about the budget: each dataset's lifetime balance and what a room used of it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import Sum

from jobs.budget.ledger import balance
from jobs.models import BudgetEntry, Room
from jobs.rooms.selectors import contributions_of


def budget_of(room: Room) -> list[dict[str, Any]]:
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
