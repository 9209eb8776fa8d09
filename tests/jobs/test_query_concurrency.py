"""Concurrent decisions and revisions: no lost update, no duplicate version, gap-free audit."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

from cleanroom.audit.log import events_of, room_log_name
from cleanroom.errors import DomainError
from jobs.models import Query
from jobs.queries.services import revise_query, submit_query
from tests import factories
from tests.factories import propose

pytestmark = pytest.mark.django_db(transaction=True)


def run_together(*calls):
    """Start every call at once on its own thread and connection; return results or errors."""
    barrier = threading.Barrier(len(calls))
    outcomes: list = [None] * len(calls)

    def worker(index, call):
        barrier.wait()
        try:
            outcomes[index] = call()
        except Exception as exc:
            outcomes[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.fixture
def pending(world, tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("row-lock concurrency is tested on PostgreSQL (DATABASE_URL)")
    room = world.study(tmp_path)
    return propose(room, world.bob, world.pharma)


def test_two_owners_approving_at_once_both_count(world, pending):
    outcomes = run_together(
        lambda: factories.decide(
            query=pending, organization=world.charite, by=world.alice, approve=True
        ),
        lambda: factories.decide(
            query=pending, organization=world.zurich, by=world.carol, approve=True
        ),
    )
    assert not [o for o in outcomes if isinstance(o, Exception)]
    pending.refresh_from_db()
    assert pending.status == Query.Status.APPROVED
    seqs = [e["seq"] for e in events_of(room_log_name(pending.room_id))]
    assert seqs == list(range(len(seqs)))


def test_two_revisions_at_once_make_one_new_version(world, pending):
    outcomes = run_together(
        *[lambda: revise_query(query=pending, by=world.bob, title="Edited")] * 4
    )
    made = [o for o in outcomes if isinstance(o, Query)]
    refused = [o for o in outcomes if isinstance(o, DomainError)]
    assert len(made) == 1 and len(refused) == 3
    assert Query.objects.filter(lineage=pending.lineage).count() == 2


def test_a_decision_racing_a_resubmission_is_never_counted_for_the_new_version(world, pending):
    draft = revise_query(query=pending, by=world.bob, title="Edited")
    outcomes = run_together(
        lambda: factories.decide(
            query=pending, organization=world.charite, by=world.alice, approve=True
        ),
        lambda: submit_query(query=draft, by=world.bob),
    )
    # The decision either lands on the old version first or is refused; nothing else breaks.
    assert all(isinstance(o, DomainError) or not isinstance(o, Exception) for o in outcomes), (
        outcomes
    )
    draft.refresh_from_db()
    pending.refresh_from_db()
    assert draft.status == Query.Status.PENDING
    assert draft.approvals.count() == 0
    assert pending.status == Query.Status.SUPERSEDED
