"""The `cleanroom` command line against a live server: its output and its exit codes (0 done,
1 refused with the API's message, 2 usage, 3 cannot connect)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest

from cleanroom.client.cli import main
from jobs.models import Query
from tests import factories
from tests.client.conftest import PASSWORD
from tests.factories import JOIN_SQL, propose, token_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def as_bob(world, live_server, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("CLEANROOM_URL", live_server.url)
    monkeypatch.setenv("CLEANROOM_TOKEN", token_for(world.bob))


def test_plan_prints_the_report_and_a_plan_that_fails_exits_1(as_bob, study, capsys):
    assert main(["plan", "study", JOIN_SQL, "--epsilon", "0.5"]) == 0
    shown = capsys.readouterr().out
    assert "Plan: passes every check" in shown
    assert "usz.patients (CH, owner usz): charges ε 0.5; 3 of 3 left; fits" in shown

    # More than a policy allows per query: the plan says so, and the command fails.
    assert main(["plan", "study", JOIN_SQL, "--epsilon", "2"]) == 1
    shown = capsys.readouterr().out
    assert "✗ budget:" in shown and "Plan: 2 check(s) failed" in shown


def test_submit_run_and_result_from_the_command_line(world, as_bob, study, site_worker, capsys):
    code = main(
        ["submit", "study", JOIN_SQL, "--epsilon", "1", "--title", "Costs", "--purpose", "Budgets"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "is pending_approval" in out and "Approvals needed from: charite, usz" in out
    query = Query.objects.get(title="Costs")
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)

    assert main(["run", "study", str(query.pk)]) == 0
    captured = capsys.readouterr()
    job_id = query.job.pk
    assert f"Job {job_id} succeeded" in captured.out and "100 % succeeded" in captured.err

    assert main(["result", "study", str(job_id)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0].split() == [
        "diagnosis",
        "n",
        "[95",
        "%",
        "interval]",
        "cost",
        "[95",
        "%",
        "interval]",
    ]
    assert shown[-2:] == ["n: discrete Laplace", "cost: Laplace"]

    assert main(["result", "study", str(job_id), "--csv", "-"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.startswith("diagnosis,suppressed,n,n_ci95_low,n_ci95_high,n_mechanism,n_scale")


def test_refusals_exit_1_with_the_apis_message(world, as_bob, study, capsys):
    bad = ["submit", "study", "SELECT * FROM charite.patients", "--epsilon", "1"]
    assert main([*bad, "--title", "t", "--purpose", "p"]) == 1
    assert capsys.readouterr().err.startswith(
        "cleanroom: refused (plan_failed): The query cannot be submitted: line 1, column 8: "
        "SELECT * is not allowed"
    )
    pending = propose(study, world.bob, world.pharma, sql=JOIN_SQL)
    assert main(["run", "study", str(pending.pk)]) == 1
    assert "cleanroom: refused (" in capsys.readouterr().err


def test_a_bad_token_exits_1_saying_so(as_bob, study, monkeypatch, capsys):
    monkeypatch.setenv("CLEANROOM_TOKEN", "crt_00000000_forged")
    assert main(["rooms"]) == 1
    assert capsys.readouterr().err == "cleanroom: refused (authentication_failed): Invalid token.\n"


def test_login_keeps_the_token_for_its_user_only_and_later_commands_use_it(
    world, study, live_server, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("CLEANROOM_TOKEN", raising=False)
    monkeypatch.setenv("CLEANROOM_PASSWORD", PASSWORD)
    assert main(["--url", live_server.url, "login", "bob", "--days", "1"]) == 0
    stored = tmp_path / "config" / "cleanroom" / "credentials.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    assert json.loads(stored.read_text())["url"] == live_server.url
    capsys.readouterr()
    assert main(["rooms"]) == 0
    assert capsys.readouterr().out.startswith("study: Outcomes study")


def test_no_token_and_bad_arguments_are_usage_errors(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("CLEANROOM_TOKEN", raising=False)
    assert main(["rooms"]) == 2
    assert "no token" in capsys.readouterr().err
    assert main(["plan", "study"]) == 2
    assert main(["frobnicate"]) == 2


def test_a_server_that_is_not_there_exits_3(unused_port, tmp_path):
    """As a shell sees it: `python -m cleanroom.client`, the console script's entry point."""
    finished = subprocess.run(
        [sys.executable, "-m", "cleanroom.client", "--url", f"http://127.0.0.1:{unused_port}",
         "datasets"],
        env={"CLEANROOM_TOKEN": "crt_x", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert finished.returncode == 3, finished.stderr
    assert finished.stderr.startswith(
        f"cleanroom: Cannot connect to http://127.0.0.1:{unused_port}"
    )
