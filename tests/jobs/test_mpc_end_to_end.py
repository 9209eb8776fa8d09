"""An approved UNION ALL across three hospitals (EU, CH, UK), run as production runs it: real
Celery workers over Redis, one per site (three input sites, three MPC party sites), real MPyC
party processes over TLS, the noise drawn inside MPC, one release and one charge; and a killed
compute party failing the job cleanly (one refund, no release)."""

from __future__ import annotations

import base64
import queue
import shutil
from dataclasses import replace

import pytest

from cleanroom.audit.log import events_of, room_log_name
from cleanroom.audit.verifier.rules import check_domain_rules
from dataplane.mpc import sharing
from jobs import tasks
from jobs.engines.mpc import parties
from jobs.engines.mpc.config import MpcConfig
from jobs.engines.mpc.engine import delivery_purpose, output_context
from jobs.execution.lifecycle import run_query
from jobs.execution.sites import own_site
from jobs.models import BudgetEntry, Job, JobStep, Result
from keyservice.release import Refused
from parties.keys import KeyServiceAccess, owner_key_service
from tests.factories import api
from tests.jobs.mpc_support import (
    INPUT_SITES,
    PARTY_SITES,
    approved_union,
    per_site_credentials,
    plain_answer,
    three_hospitals,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def room(world, tmp_path):
    return three_hospitals(world, tmp_path)


@pytest.fixture
def inboxes(share_inboxes):
    """Each party site's share inbox, a process of its own listening over mutual TLS."""
    share_inboxes.start(*PARTY_SITES)
    return share_inboxes


@pytest.fixture
def workers(site_worker):
    """A worker per input site and per MPC party site; returns a function that waits for
    `count` finished tasks and returns their outcomes."""
    waits = [site_worker(site) for site in INPUT_SITES + PARTY_SITES]

    def finished(count: int, timeout: float = 120) -> list[str]:
        return [waits[0](timeout)[2] for _ in range(count)]

    return finished


def ledger(job: Job) -> list[str]:
    return sorted(BudgetEntry.objects.filter(query=job.query).values_list("kind", flat=True))


def types(job: Job) -> list[str]:
    return [
        e["type"]
        for e in events_of(room_log_name(job.query.room_id))
        if e["data"].get("job") == f"job:{job.pk}"
    ]


def test_a_union_across_three_jurisdictions_runs_under_mpc_and_releases_once(
    world, room, inboxes, workers, tmp_path, settings
):
    job = run_query(query=approved_union(world, room), by=world.bob)
    outcomes = workers(6)
    assert sorted(outcomes).count("shared") == 3
    assert "released" in outcomes, outcomes

    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.charged_at is not None
    assert all(s.state == JobStep.State.SUCCEEDED for s in job.steps.all())
    assert ledger(job) == ["reserve"] * 3 + ["spend"] * 3

    body = api(world.bob).get(f"/api/rooms/{room.slug}/jobs/{job.pk}/result/").json()
    table = body["table"]
    assert body["simulated_tee"] is False
    truth = plain_answer(tmp_path)
    for row in table["rows"]:
        exact = truth[row["age_band"]]
        if row["suppressed"]:
            continue
        # ε 0.5 over three measurements: the count's discrete Laplace has scale 6, the stay
        # sum's 360; 25 scales is exceeded with probability about e^-25 per cell.
        assert abs(row["n"]["value"] - exact["n"]) <= 25 * 6
        assert abs(row["stay"]["value"] - exact["stay"]) <= 25 * 360
        assert row["n"]["mechanism"] == "discrete Laplace"
        assert row["n"]["ci95_low"] < row["n"]["value"] < row["n"]["ci95_high"]
        assert isinstance(row["n"]["value"], int)
        assert 0 <= row["mean_cost"]["value"] <= 100_000
        assert "2^-3 grid" in row["mean_cost"]["mechanism"]
    assert sum(not row["suppressed"] for row in table["rows"]) >= 3

    seen = types(job)
    assert seen.count("result.released") == 1 and seen.count("budget.spent") == 3
    assert seen.count("job.step.succeeded") == 7  # 3 inputs, 3 parties, the delivery
    assert seen.count("key.released") == 3
    shares_decided = [
        e
        for e in events_of(room_log_name(room.pk))
        if e["type"] == "residency.decided"
        and e["data"]["kind"] == "receive_shares"
        and e["data"]["checked_by"].endswith("sending shares")
    ]
    assert len(shares_decided) == 9  # each owner's shares, to each of three parties
    # The room's log passes the offline verifier's domain rules with the MPC job's events.
    check_domain_rules(events_of(room_log_name(room.pk)))

    # The shares went over the network: no site wrote into any jurisdiction's storage (only
    # the owners' uploaded datasets are there), and each party's inbox folder holds only the
    # shares sealed to that party, one per owner.
    stored = sorted(
        str(p.relative_to(settings.STORAGE_ROOT)) for p in settings.STORAGE_ROOT.rglob("*")
    )
    assert not [p for p in stored if "mpc" in p], stored
    for compute in job.steps.filter(kind=JobStep.Kind.COMPUTE).select_related("site"):
        received = sorted(
            p.name for p in (settings.MPC_INBOX_DIR / compute.site.name).rglob("*.sealed")
        )
        assert received == [f"party-{compute.party}.sealed"] * 3
    assert sorted(p.name for p in settings.MPC_INBOX_DIR.iterdir()) == PARTY_SITES

    # A compute step delivered again after the release finds nothing to do.
    party = job.steps.get(kind=JobStep.Kind.COMPUTE, party=0)
    tasks.run_step.apply_async(args=[party.pk, party.site.name], queue=party.site.queue)
    assert workers(1) == ["nothing to do"]
    assert Result.objects.filter(job=job).count() == 1
    assert ledger(job) == ["reserve"] * 3 + ["spend"] * 3


def test_each_partys_keys_stay_at_its_own_site_and_the_job_still_releases(
    world, room, share_inboxes, workers, monkeypatch, settings, tmp_path
):
    """Each site's worker has a credentials folder of its own (MPC_CREDENTIALS_DIR, per
    process in production; here per worker thread): a party site only its own keys, an input
    site only the CA's and the parties' certificates; the CA's folder is offline."""
    roots = per_site_credentials(tmp_path / "deployment", tmp_path / "sites")
    shutil.rmtree(tmp_path / "deployment")
    settings.MPC_CREDENTIALS_DIR = tmp_path / "nobody-reads-this"
    from_settings = MpcConfig.from_settings

    def at_own_site(settings):
        return replace(from_settings(settings), credentials=roots[own_site().name])

    monkeypatch.setattr(MpcConfig, "from_settings", at_own_site)
    share_inboxes.start(*PARTY_SITES, credentials=roots)
    job = run_query(query=approved_union(world, room), by=world.bob)
    # The compute steps are sent once every input step has shared.
    assert workers(3) == ["shared"] * 3, Job.objects.get(pk=job.pk).error
    outcomes = workers(3)

    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error
    assert "released" in outcomes and Result.objects.filter(job=job).count() == 1
    for site, root in roots.items():
        keys = sorted(str(p.relative_to(root)) for p in root.rglob("*.key"))
        own = [f"parties/{site}/share.key", f"parties/{site}/tls.key"]
        assert keys == (own if site in PARTY_SITES else [f"senders/{site}/tls.key"]), site
    assert not (tmp_path / "nobody-reads-this").exists()


def test_a_killed_compute_party_fails_the_job_cleanly_with_one_refund(
    world, room, inboxes, workers, monkeypatch, settings
):
    settings.MPC_PARTY_TIMEOUT = 10
    started: queue.Queue = queue.Queue()
    spawn = parties.subprocess.Popen

    def observed(*args, **kwargs):
        process = spawn(*args, **kwargs)
        started.put(process)
        return process

    monkeypatch.setattr(parties.subprocess, "Popen", observed)
    job = run_query(query=approved_union(world, room), by=world.bob)
    first = started.get(timeout=120)
    first.kill()
    outcomes = workers(6, timeout=settings.MPC_PARTY_TIMEOUT + 60)
    assert outcomes.count("failed") >= 1 and "released" not in outcomes

    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert job.charged_at is None
    # No output share a party stores later can be opened: the delivery key is gone from the
    # receiver's key service, not only marked so in a row.
    delivery = job.steps.get(kind=JobStep.Kind.DELIVER)
    late = sharing.seal_for_receiver(
        [7], base64.b64decode(delivery.output["public_key"]), output_context(job.pk, 3)
    )
    receiver = owner_key_service(world.pharma, KeyServiceAccess.from_settings(settings))
    with pytest.raises(Refused, match="destroyed"):
        receiver.open_received(
            delivery_purpose(job.pk), late, context=output_context(job.pk, 3), reader="operator"
        )
    assert not Result.objects.filter(job=job).exists()
    assert ledger(job) == ["refund"] * 3 + ["reserve"] * 3
    seen = types(job)
    assert seen.count("budget.refunded") == 3 and "result.released" not in seen
    assert seen[-1] != "job.succeeded" and seen.count("job.failed") == 1
