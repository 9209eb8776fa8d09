"""The budget ledger: a dataset's balance is the sum of its entries in every room.

A dataset's total ε and δ are its budget for its whole life, across every room it is contributed
to: a person in it loses privacy to each query that reads it, whichever room asked. The total is
the one in the dataset's current policy version (the owner's latest word: lowering it stops
further spending at once, in every room). Entries keep their room, for reporting per room.

A job reserves its ε when it starts, turns the reservation into a spend when its result is
released, and refunds it when it fails before any noisy value exists. Spent and reserved ε both
count against the total, so concurrent jobs, in any rooms, never overspend."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.db.models import Case, DecimalField, F, Sum, Value, When

from cleanroom.errors import DomainError
from jobs.engines.base import canonical_of
from jobs.models import BudgetEntry, Query, Room, RoomDataset
from parties.models import Dataset
from parties.selectors import current_policy

LIFETIME = "the dataset's lifetime budget, across every room"


@dataclass(frozen=True)
class Balance:
    total_epsilon: Decimal
    total_delta: Decimal
    used_epsilon: Decimal  # reserved or spent, less refunds, in every room
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


def used(entries) -> tuple[Decimal, Decimal]:
    """ε and δ the entries use. Spends convert reservations (the reservation entry stays), so
    only reserve and refund entries move the balance."""
    totals = entries.aggregate(epsilon=_signed("epsilon"), delta=_signed("delta"))
    return totals["epsilon"] or Decimal(0), totals["delta"] or Decimal(0)


def balance(dataset: Dataset) -> Balance:
    """The dataset's one balance: its current policy's totals less what every room used."""
    policy = current_policy(dataset)
    used_epsilon, used_delta = used(BudgetEntry.objects.filter(dataset=dataset))
    return Balance(
        total_epsilon=policy.total_epsilon,
        total_delta=policy.total_delta,
        used_epsilon=used_epsilon,
        used_delta=used_delta,
    )


def plain(value: Decimal) -> str:
    """A decimal as people write it: 0.5, not 0.5000."""
    return format(Decimal(value).normalize(), "f")


def refusal(name: str, funds: Balance, epsilon: Decimal, delta: Decimal) -> str | None:
    """Why the balance cannot pay for a query, or None if it can."""
    if epsilon > funds.remaining_epsilon:
        return (
            f"{name}: charges ε {plain(epsilon)}, but only {plain(funds.remaining_epsilon)} of "
            f"{plain(funds.total_epsilon)} is left ({LIFETIME}): it does not fit."
        )
    if delta > funds.remaining_delta:
        return (
            f"{name}: charges δ {plain(delta)}, but only {plain(funds.remaining_delta)} of "
            f"{plain(funds.total_delta)} is left ({LIFETIME}): it does not fit."
        )
    return None


def budget_check(
    name: str,
    funds: Balance,
    *,
    epsilon: Decimal,
    delta: Decimal,
    max_per_query: Decimal,
    private: bool = True,
) -> tuple[bool, str]:
    """The planner's budget check of one dataset, worded as people say it ("charges ε 0.8;
    4 of 5 left"), so the charge and the balance cannot be mistaken for each other; also used
    to show a submitted plan's balance as of now."""
    if not private:
        return True, f"{name}: nothing is charged, as the method is not differentially private."
    if epsilon <= 0:
        return False, "ε must be positive."
    if epsilon > max_per_query:
        return False, (
            f"ε {plain(epsilon)} is above {name}'s maximum of {plain(max_per_query)} per query."
        )
    reason = refusal(name, funds, epsilon, delta)
    if reason:
        return False, reason
    return True, (
        f"{name}: charges ε {plain(epsilon)}; {plain(funds.remaining_epsilon)} of "
        f"{plain(funds.total_epsilon)} left ({LIFETIME}), so it fits."
    )


class BudgetExceeded(DomainError):
    code = "budget_exceeded"


def reserve(*, query: Query, room: Room, epsilon: Decimal, delta: Decimal) -> None:
    """Reserve the query's cost on every dataset it reads, under a row lock on each dataset in
    a fixed order: every job that charges a dataset, in any room, takes the same lock, so
    concurrent jobs never overspend its lifetime budget. Call inside the job's start
    transaction. Idempotent: a retried attempt finds its reservation and takes no more."""
    if BudgetEntry.objects.filter(query=query, kind=BudgetEntry.Kind.RESERVE).exists():
        return
    contributions = (
        RoomDataset.objects.filter(room=room, dataset_id__in=query.dataset_ids)
        .select_related("dataset__organization")
        .order_by("dataset_id")
    )
    # All or nothing: a refusal on a later dataset takes back the earlier ones' reservations,
    # so a refused job leaves no entry behind (nor a refund of a reservation never audited).
    with transaction.atomic():
        for contribution in contributions:
            Dataset.objects.select_for_update().get(pk=contribution.dataset_id)
            name = contribution.dataset.qualified_name
            reason = refusal(name, balance(contribution.dataset), epsilon, delta)
            if reason:
                raise BudgetExceeded(reason)
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


def charge_of(query: Query) -> tuple[Decimal, Decimal]:
    """What the ledger reserves on each dataset: the query's ε and δ, or for a synthetic
    extract the cost of its method as approved (part of the digest every owner signed)."""
    if query.output_kind == Query.OutputKind.SYNTHETIC:
        charge = canonical_of(query)["synthetic"]["charge"]
        return Decimal(charge["epsilon"]), Decimal(charge["delta"])
    return query.epsilon, query.delta
