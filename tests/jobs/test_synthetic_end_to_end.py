"""A DP synthetic extract of the joined hospital data, run as production runs it: dispatched to
the TEE site's queue on a real broker, claimed by that site's worker, synthesized by the enclave
process after a verified attestation and key release, released once to its receivers with its
reports, charged once, recorded in the room's log, whose bundle verifies."""

from __future__ import annotations

import io
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from django.conf import settings
from django.utils import timezone

from cleanroom.attestation.measured import measured_modules
from cleanroom.audit.bundles import export_bundle
from cleanroom.audit.log import events_of, room_log_name
from cleanroom.audit.verifier.rules import result_commitment
from dataplane.synthesis import SynthColumn, dp_cost
from jobs.execution import lifecycle, outbox
from jobs.execution.lifecycle import run_query, start_attempt
from jobs.execution.outbox import dispatch as send_to_broker
from jobs.models import BudgetEntry, Job, Query, Result
from tests import factories
from tests.audit.bundling import run_verify, trust_file
from tests.engines.support import order_of
from tests.engines.support import tee_engine as tee_engine_of_worker
from tests.factories import api, propose
from tests.jobs.test_job_faults import enclaves
from tests.jobs.test_synthetic_plan import JOINED, UNIONED, allow_synthetic

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def approved(world, tmp_path):
    room = world.study(tmp_path)
    allow_synthetic(world, room)
    query = propose(
        room,
        world.bob,
        world.pharma,
        sql=JOINED,
        title="Synthetic patients",
        epsilon=Decimal("1"),
        delta=Decimal("1e-6"),
        output_kind=Query.OutputKind.SYNTHETIC,
        synthetic_method="dp-marginals",
        synthetic_rows=300,
    )
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    query.refresh_from_db()
    assert query.status == Query.Status.APPROVED
    return query


def test_a_dp_extract_of_joined_data_reaches_only_its_receiver_with_reports(
    world, approved, site_worker, tmp_path
):
    measured = set(measured_modules(Path(settings.BASE_DIR)))
    assert (
        "dataplane.synthesis.dp_marginals" in measured and "dataplane.privacy.extract" in measured
    )
    wait = site_worker("eu-frankfurt-tee")
    job = run_query(query=approved, by=world.bob)
    assert wait(600) == ("jobs.run_job", "SUCCESS", "released")
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.attestation["kind"] == "simulated" and job.attestation["accepted"]

    room = approved.room.slug
    answer = api(world.bob).get(f"/api/rooms/{room}/jobs/{job.pk}/result/").json()
    charge = approved.canonical["synthetic"]["charge"]
    assert answer["output_kind"] == "synthetic" and answer["differentially_private"] is True
    assert answer["label"] is None and answer["simulated_tee"] is True
    assert Decimal(answer["epsilon"]) == Decimal(charge["epsilon"]) <= 1
    extract = answer["extract"]
    assert extract["method"] == "dp-marginals" and extract["rows"] == 300
    assert 0 <= extract["quality"]["overall"] <= 1
    assert set(extract["quality"]["per_column"]) == {"age_band", "diagnosis", "stay"}
    assert extract["privacy"]["differentially_private"] is True

    files = {f["name"]: f for f in answer["files"]}
    assert {"extract.csv", "quality.json", "privacy.json"} <= set(files)
    downloaded = {}
    for name, described in files.items():
        response = api(world.bob).get(described["url"])
        assert response.status_code == 200, name
        downloaded[name] = response.content
        salt = bytes.fromhex(answer["opening"]["salt"])
        assert result_commitment(salt, response.content, name) == described["commitment"]
    rows = pl.read_csv(io.BytesIO(downloaded["extract.csv"]), comment_prefix="#")
    # Only the projected columns, never the unit or the join key, each within its public domain.
    assert rows.columns == ["age_band", "diagnosis", "stay"]
    assert rows.height == 300
    assert set(rows["age_band"]) <= {"0-17", "18-39", "40-64", "65+"}
    assert rows["stay"].min() >= 0 and rows["stay"].max() <= 60

    # Charged once, on both datasets, what the approved plan said.
    entries = BudgetEntry.objects.filter(query=approved)
    assert sorted(entries.values_list("kind", flat=True)) == ["reserve"] * 2 + ["spend"] * 2
    assert {(e.epsilon, e.delta) for e in entries} == {
        (Decimal(charge["epsilon"]), Decimal(charge["delta"]))
    }
    assert Result.objects.filter(job=job).count() == 1

    # The owners who are not receivers see nothing; an outsider does not even see the job.
    pages = [f"/rooms/{room}/jobs/{job.pk}/result/{part}" for part in ("", "files/extract.csv")]
    for user, status in ((world.alice, 403), (world.mallory, 404)):
        client = api(user)
        assert client.get(f"/api/rooms/{room}/jobs/{job.pk}/result/").status_code == status
        assert client.get(files["extract.csv"]["url"]).status_code == status
        client.force_login(user)
        assert [client.get(url).status_code for url in pages] == [status, status]

    events = events_of(room_log_name(approved.room_id))
    types = [e["type"] for e in events]
    for expected in ("attestation.verified", "key.released", "budget.reserved", "budget.spent"):
        assert expected in types, expected
    released = [e for e in events if e["type"] == "result.released"]
    assert len(released) == 1
    data = released[0]["data"]
    assert data["method"] == "dp-marginals" and data["differentially_private"] is True
    assert data["files"] == {name: f["commitment"] for name, f in files.items()}
    assert data["epsilon"] == charge["epsilon"]
    submitted = next(e for e in events if e["type"] == "query.submitted")
    assert submitted["data"]["synthetic"]["rows"] == 300

    bundle = tmp_path / "room.zip"
    export_bundle(room=approved.room, output=bundle)
    verdict = run_verify(bundle, trust_file(tmp_path, "allow-simulated-tee"))
    assert verdict.ok, verdict.stdout + verdict.stderr


def test_an_sdv_extract_is_labelled_not_dp_everywhere_and_charges_nothing(
    world, site_worker, tmp_path
):
    room = world.study(tmp_path)
    allow_synthetic(world, room, non_dp=[world.charite, world.zurich])
    query = propose(
        room,
        world.bob,
        world.pharma,
        sql=UNIONED,
        epsilon=Decimal(0),
        output_kind=Query.OutputKind.SYNTHETIC,
        synthetic_method="sdv-gaussian-copula",
        synthetic_rows=100,
    )
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    wait = site_worker("eu-frankfurt-tee")
    job = run_query(query=Query.objects.get(pk=query.pk), by=world.bob)
    assert wait(600) == ("jobs.run_job", "SUCCESS", "released")

    answer = api(world.bob).get(f"/api/rooms/{room.slug}/jobs/{job.pk}/result/").json()
    assert answer["differentially_private"] is False
    assert answer["label"] == "not differentially private"
    extract = next(f for f in answer["files"] if f["name"] == "extract.csv")
    first_line = api(world.bob).get(extract["url"]).content.splitlines()[0].decode()
    assert "NOT DIFFERENTIALLY PRIVATE" in first_line.upper()
    released = next(e for e in events_of(room_log_name(room.pk)) if e["type"] == "result.released")
    assert released["data"]["differentially_private"] is False
    assert released["data"]["method"] == "sdv-gaussian-copula"
    entries = BudgetEntry.objects.filter(query=query)
    assert {(e.epsilon, e.delta) for e in entries} == {(Decimal(0), Decimal(0))}


class WorkerLost(BaseException):
    """The worker process vanished: nothing after this point runs, no handler, no failure."""


def test_a_worker_lost_mid_fit_is_charged_once_what_opendp_gives_and_never_fitted_again(
    world, approved, site_worker, monkeypatch
):
    site = "eu-frankfurt-tee"
    monkeypatch.setenv("CLEANROOM_SITE", site)
    monkeypatch.setattr(outbox, "dispatch", lambda job_id: None)  # the test sends it
    job = run_query(query=approved, by=world.bob)
    first = start_attempt(job.pk, site)

    messages = []

    def lost_while_fitting(percent: int, message: str) -> bool:
        messages.append(message)
        lifecycle.report_progress(job.pk, percent, message)
        if percent == 65:  # the enclave has the keys and is fitting now
            raise WorkerLost
        return True

    with pytest.raises(WorkerLost):
        tee_engine_of_worker().run(order_of(first), lost_while_fitting)
    assert not enclaves()
    # Progress reaches the analyst's page: it states steps, never a count of real rows.
    assert "Rows prepared for the synthesizer" in messages
    assert not any(character.isdigit() for message in messages for character in message)
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING and job.charged_at is not None

    # Delivered again once its lease ran out, it finds the job charged: a second fit would be
    # a second noisy release.
    later = job.lease_expires_at + timedelta(seconds=1)
    monkeypatch.setattr(timezone, "now", lambda: later)
    wait = site_worker(site)
    assert send_to_broker(job.pk)
    assert wait(600) == ("jobs.run_job", "SUCCESS", "nothing to do")
    job.refresh_from_db()
    assert (job.state, job.attempt) == (Job.State.FAILED, 1)
    assert not Result.objects.filter(job=job).exists()

    # OpenDP's map for this run, as the enclave calibrates it: what the ledger holds, once.
    # (The bounds are the schema's length_of_stay bounds, the extract's one measure.)
    plan = approved.plan["synthetic"]
    columns = [
        SynthColumn(
            name=c["name"],
            type=c["type"],
            categories=None if c["categories"] is None else tuple(c["categories"]),
            lower=None if c["bins"] is None else 0.0,
            upper=None if c["bins"] is None else 60.0,
        )
        for c in plan["columns"]
    ]
    cost = dp_cost(columns, epsilon=1.0, delta=1e-6, rows_per_unit=plan["changed_rows_per_unit"])
    entries = BudgetEntry.objects.filter(query=approved)
    assert sorted(entries.values_list("kind", flat=True)) == ["reserve"] * 2 + ["spend"] * 2
    for entry in entries:
        assert (
            Decimal(repr(cost.epsilon))
            <= entry.epsilon
            < Decimal(repr(cost.epsilon)) + (Decimal("0.0001"))
        )
        assert entry.delta == Decimal("0.000001")
