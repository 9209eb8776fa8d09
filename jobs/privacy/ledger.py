"""The budget ledger: a dataset's balance in a room is the sum of its entries.

A job reserves its ε when it starts, turns the reservation into a spend when its result is
released, and refunds it when it fails before any noisy value exists. Spent and reserved ε both
count against the total, so concurrent jobs never overspend.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.db.models import Case, DecimalField, F, Sum, Value, When

from cleanroom.errors import DomainError
from jobs.models import BudgetEntry, Query, Room, RoomDataset
from parties.models import AnalysisPolicy, Dataset


@dataclass(frozen=True)
class Balance:
    total_epsilon: Decimal
    total_delta: Decimal
    used_epsilon: Decimal  # reserved or spent, less refunds
    used_delta: Decimal

    @property
    def remaining_epsilon(self) -> Decimal:
        return self.total_epsilon - self.used_epsilon

    @property
    def remaining_delta(self) -> Decimal:
        return self.total_delta - self.used_delta


def _signed(field: str):
    """Reservations and spends use budget; a refund gives a reservation back."""
    return Sum(
        Case(
            When(kind=BudgetEntry.Kind.REFUND, then=-F(field)),
            When(kind=BudgetEntry.Kind.RESERVE, then=F(field)),
            default=Value(0),
            output_field=DecimalField(max_digits=20, decimal_places=12),
        )
    )


def balance(room: Room, dataset: Dataset, policy: AnalysisPolicy) -> Balance:
    """Spends convert reservations (the reservation entry stays), so only reserve and refund
    entries move the balance."""
    totals = BudgetEntry.objects.filter(room=room, dataset=dataset).aggregate(
        epsilon=_signed("epsilon"), delta=_signed("delta")
    )
    return Balance(
        total_epsilon=policy.total_epsilon,
        total_delta=policy.total_delta,
        used_epsilon=totals["epsilon"] or Decimal(0),
        used_delta=totals["delta"] or Decimal(0),
    )


class BudgetExceeded(DomainError):
    code = "budget_exceeded"


def reserve(*, query: Query, room: Room, epsilon: Decimal, delta: Decimal) -> None:
    """Reserve the query's cost on every dataset it reads, under a row lock on each dataset in
    a fixed order, so concurrent jobs never overspend. Call inside the job's start transaction.
    Idempotent: a retried attempt finds its reservation and takes no more."""
    if BudgetEntry.objects.filter(query=query, kind=BudgetEntry.Kind.RESERVE).exists():
        return
    contributions = (
        RoomDataset.objects.filter(room=room, dataset_id__in=query.dataset_ids)
        .select_related("dataset", "policy")
        .order_by("dataset_id")
    )
    # All or nothing: a refusal on a later dataset takes back the earlier ones' reservations,
    # so a refused job leaves no entry behind (nor a refund of a reservation never audited).
    with transaction.atomic():
        for contribution in contributions:
            Dataset.objects.select_for_update().get(pk=contribution.dataset_id)
            funds = balance(room, contribution.dataset, contribution.policy)
            if epsilon > funds.remaining_epsilon or delta > funds.remaining_delta:
                raise BudgetExceeded(
                    f"{contribution.dataset.qualified_name} has ε {funds.remaining_epsilon} "
                    f"left; this query needs {epsilon}."
                )
            BudgetEntry.objects.create(
                room=room,
                dataset=contribution.dataset,
                query=query,
                kind=BudgetEntry.Kind.RESERVE,
                epsilon=epsilon,
                delta=delta,
            )


def settle(*, query: Query, kind: str) -> list[BudgetEntry]:
    """Turn the query's reservations into spends, or refund them; once only."""
    if BudgetEntry.objects.filter(query=query).exclude(kind=BudgetEntry.Kind.RESERVE).exists():
        return []
    return [
        BudgetEntry.objects.create(
            room=entry.room,
            dataset=entry.dataset,
            query=query,
            kind=kind,
            epsilon=entry.epsilon,
            delta=entry.delta,
        )
        for entry in BudgetEntry.objects.filter(query=query, kind=BudgetEntry.Kind.RESERVE)
    ]
