"""An approved query, run as production runs it: dispatched after commit to its site's queue
on a real broker, claimed by that site's worker, computed by the enclave process after a
verified attestation and key release, released once to its receivers, charged once."""

from __future__ import annotations

from decimal import Decimal

import polars as pl
import pytest

from cleanroom.audit.log import events_of, room_log_name
from jobs.execution.lifecycle import run_query
from jobs.models import BudgetEntry, Job, Query, Result
from tests import factories
from tests.factories import JOIN_SQL, api, propose

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def approved(world, tmp_path):
    # 400 patients each: every diagnosis joins 30 to 51 people, so noise at scale 4 pushes a
    # group under 10 in well under 1 % of runs (at 200 each, 12 to 26 people, it did in some).
    room = world.study(tmp_path, rows=400)
    query = propose(room, world.bob, world.pharma, sql=JOIN_SQL, epsilon=Decimal("1"))
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    query.refresh_from_db()
    return query


def test_an_approved_join_runs_in_the_attested_enclave_and_only_receivers_read_it(
    world, approved, site_worker, tmp_path
):
    wait = site_worker("eu-frankfurt-tee")
    job = run_query(query=approved, by=world.bob)
    name, state, outcome = wait()
    assert (name, state, outcome) == ("jobs.run_job", "SUCCESS", "released")

    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED and job.attempt == 1
    assert job.attestation["kind"] == "simulated" and job.attestation["accepted"]
    assert Query.objects.get(pk=approved.pk).status == Query.Status.DONE

    table = api(world.bob).get(f"/api/rooms/{approved.room.slug}/jobs/{job.pk}/result/").json()
    assert table["simulated_tee"] is True
    rows = {row["diagnosis"]: row for row in table["table"]["rows"]}
    # The plain answer, computed here from the test's own files: the released counts are
    # within their 95 % intervals' reach of it (scale 4 at ε 0.5 per measurement).
    berlin = pl.read_csv(tmp_path / "charite.csv")
    zurich = pl.read_csv(tmp_path / "usz.csv")
    truth = dict(berlin.join(zurich, on="person_hash").group_by("diagnosis").len().iter_rows())
    released = {d: row for d, row in rows.items() if not row["suppressed"]}
    assert len(released) >= 3, rows
    for diagnosis, row in released.items():
        # Discrete Laplace at scale 4: |noise| > 60 has probability about e^-15.
        assert abs(row["n"]["value"] - truth[diagnosis]) < 60
        assert row["n"]["ci95_low"] <= row["n"]["value"] <= row["n"]["ci95_high"]
        assert row["cost"]["mechanism"] == "Laplace"

    kinds = sorted(BudgetEntry.objects.filter(query=approved).values_list("kind", flat=True))
    assert kinds == ["reserve", "reserve", "spend", "spend"]
    assert Result.objects.filter(job=job).count() == 1

    outsider = api(world.alice).get(f"/api/rooms/{approved.room.slug}/jobs/{job.pk}/result/")
    assert outsider.status_code == 403
    assert (
        api(world.mallory).get(f"/api/rooms/{approved.room.slug}/jobs/{job.pk}/result/").status_code
        == 404
    )

    types = [e["type"] for e in events_of(room_log_name(approved.room_id))]
    for expected in (
        "job.dispatched",
        "residency.decided",
        "job.started",
        "budget.reserved",
        "attestation.verified",
        "key.released",
        "result.released",
        "budget.spent",
        "job.succeeded",
    ):
        assert expected in types, expected
    assert types.index("attestation.verified") < types.index("key.released")
    assert types.count("result.released") == 1


def test_a_second_run_of_the_same_version_is_refused(world, approved, site_worker):
    wait = site_worker("eu-frankfurt-tee")
    job = run_query(query=approved, by=world.bob)
    assert wait()[2] == "released"
    again = api(world.bob).post(f"/api/rooms/{approved.room.slug}/queries/{approved.pk}/run/")
    assert again.status_code in (400, 409)
    assert Job.objects.filter(query=approved).count() == 1
    assert Result.objects.filter(job=job).count() == 1
