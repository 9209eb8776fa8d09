"""The client against a live server, as an analyst uses it: log in, list, plan, submit, run and
wait, and the result as a DataFrame; refusals as the API's code and message."""

from __future__ import annotations

import io
import zipfile

import polars as pl
import pytest

from cleanroom.client import ApiError, CannotConnect, Client, Plan
from jobs.models import Query
from tests import factories
from tests.client.conftest import PASSWORD
from tests.factories import JOIN_SQL, token_for

pytestmark = pytest.mark.django_db(transaction=True)


def approve_as_owners(world, query_id: int) -> None:
    # The owners' own approval is their key's (issue #16), outside this client for now.
    query = Query.objects.get(pk=query_id)
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)


def test_an_analyst_goes_from_login_to_a_dataframe_of_the_released_result(
    world, study, live_server, site_worker, capsys
):
    bob = Client.login(live_server.url, "bob", PASSWORD)
    assert bob.token.startswith("crt_") and bob.token_expires_at

    assert [room["slug"] for room in bob.rooms()] == ["study"]
    assert {d["qualified_name"] for d in bob.datasets()} == {"charite.patients", "usz.patients"}
    policies = bob.policies("study")
    assert sorted(policies["charite.patients"]["allowed_measures"]) == ["cost", "length_of_stay"]

    plan = bob.plan("study", JOIN_SQL, 1)
    assert isinstance(plan, Plan) and plan.ok, plan
    assert plan.mechanism == "tee"
    assert plan.epsilon == {"charite.patients": "1", "usz.patients": "1"}
    assert set(plan.accuracy) == {"n", "cost"} and plan.accuracy["n"] > 0
    assert plan.approvers == ["charite", "usz"]
    shown = str(plan)
    assert "Plan: passes every check" in shown
    assert "charite.patients (EU, owner charite): charges ε 1; 3 of 3 left; fits" in shown
    assert "Residency, step by step:" in shown and "at eu-frankfurt-tee (EU): allowed" in shown

    query = bob.submit("study", JOIN_SQL, 1, title="Costs by diagnosis", purpose="Plan budgets")
    assert query.status == "pending_approval" and query.plan.ok
    # A notebook echoing the query shows its gist, not the pages of its report.
    assert "plan=Plan(ok=True, mechanism='tee', epsilon={" in repr(query)
    assert len(repr(query)) < 500
    approve_as_owners(world, query.id)

    job = bob.run(query)
    assert job.state == "queued"
    done = bob.wait(job, poll_seconds=0.05)
    assert done.state == "succeeded" and done.has_result
    progress = capsys.readouterr().err
    assert f"job {job.id} [" in progress and "100 % succeeded" in progress

    frame = bob.result(done)
    assert isinstance(frame, pl.DataFrame)
    assert frame.columns == [
        "diagnosis",
        "suppressed",
        *[f"{alias}{part}" for alias in ("n", "cost") for part in
          ("", "_ci95_low", "_ci95_high", "_mechanism", "_scale")],
    ]  # fmt: skip
    released = frame.filter(~pl.col("suppressed"))
    assert len(released) >= 3
    for row in released.iter_rows(named=True):
        assert row["n_ci95_low"] <= row["n"] <= row["n_ci95_high"]
        assert row["cost_ci95_low"] <= row["cost"] <= row["cost_ci95_high"]
        assert row["cost_mechanism"] == "Laplace"
    assert frame.to_pandas().shape == frame.shape

    # The budget the run spent, as the room shows it.
    budget = {line["dataset"]: line for line in bob.budget("study")}
    assert budget["charite.patients"]["remaining_epsilon"] == "2.0000"


def test_refusals_carry_the_apis_code_and_message(world, study, live_server):
    bob = Client(live_server.url, token_for(world.bob))
    with pytest.raises(ApiError) as refused:
        bob.submit("study", "SELECT * FROM charite.patients", 1, title="All", purpose="All")
    assert refused.value.status == 400
    assert refused.value.code == "plan_failed"
    assert refused.value.message == (
        "The query cannot be submitted: line 1, column 8: SELECT * is not allowed: name the "
        "dimensions and aggregates to release"
    )

    mallory = Client(live_server.url, token_for(world.mallory))
    with pytest.raises(ApiError) as hidden:
        mallory.plan("study", JOIN_SQL, 1, receivers=["mallory"])
    assert (hidden.value.status, hidden.value.code) == (404, "not_found")


def test_a_bad_or_missing_token_is_refused_clearly(world, study, live_server):
    with pytest.raises(ApiError) as refused:
        Client(live_server.url, "crt_00000000_not-a-token").rooms()
    assert refused.value.status == 401
    assert refused.value.code == "authentication_failed"
    assert refused.value.message == "Invalid token."

    with pytest.raises(ApiError) as wrong_password:
        Client.login(live_server.url, "bob", "not-the-password")
    assert wrong_password.value.status == 400
    assert "Unable to log in" in wrong_password.value.message


def test_a_server_that_is_not_there_is_cannot_connect(unused_port):
    with pytest.raises(CannotConnect) as failure:
        Client(f"http://127.0.0.1:{unused_port}", "crt_x").rooms()
    assert failure.value.code == "cannot_connect"
    assert f"127.0.0.1:{unused_port}" in failure.value.message


def test_an_owner_downloads_the_rooms_audit_bundle(world, study, live_server, tmp_path):
    alice = Client(live_server.url, token_for(world.alice))
    path = alice.bundle("study", tmp_path / "study.zip")
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as bundle:
        assert {"MANIFEST.json", "MANIFEST.sig", "verify.pyz"} <= set(bundle.namelist())
    bob = Client(live_server.url, token_for(world.bob))
    with pytest.raises(ApiError) as refused:
        bob.bundle("study", tmp_path / "not.zip")
    assert refused.value.status == 404 and not (tmp_path / "not.zip").exists()
