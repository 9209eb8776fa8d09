"""Prometheus metrics: the web tier's /metrics serves the named metrics to the operator's
token alone, a refusal increments its counter, and a Celery worker serves its own on its
metrics port, adding up its pool's processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request

import pytest
from celery import Celery
from django.conf import settings
from django.test import Client
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families

from cleanroom.metrics import Jobs
from tests.factories import JOIN_SQL, api, propose

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKEN = "a-scrape-token-" + "s" * 30


@pytest.fixture
def scrape(settings):
    settings.METRICS_TOKEN = TOKEN

    def scrape() -> dict[str, dict[tuple, float]]:
        response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200
        samples: dict[str, dict[tuple, float]] = {}
        for family in text_string_to_metric_families(response.content.decode()):
            for sample in family.samples:
                labels = tuple(sorted(sample.labels.items()))
                samples.setdefault(sample.name, {})[labels] = sample.value
        return samples

    return scrape


@pytest.mark.django_db
def test_metrics_are_refused_without_the_operator_s_token(settings):
    """A stranger on the internet scrapes the web tier: no queue names, job counts or refusals
    for them. Without a token configured there is no /metrics at all."""
    client = Client()
    assert client.get("/metrics").status_code == 404
    settings.METRICS_TOKEN = TOKEN
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer guessed").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Token {TOKEN}").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").status_code == 403


@pytest.mark.django_db
def test_the_web_tier_serves_the_named_metrics(scrape):
    samples = scrape()
    assert samples["cleanroom_broker_up"] == {(): 1.0}
    queues = {dict(labels)["queue"] for labels in samples["cleanroom_queue_depth"]}
    assert {"control", "audit", "site.eu-frankfurt", "site.ch-geneva-mpc"} <= queues
    # Families are named even before anything was counted (HELP and TYPE lines).
    body = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    for name in (
        "cleanroom_refusals_total",
        "cleanroom_task_duration_seconds",
        "cleanroom_jobs",
        "cleanroom_job_duration_seconds",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in body


@pytest.mark.django_db
def test_queue_depth_counts_the_messages_waiting_on_a_site_s_queue(scrape):
    before = scrape()["cleanroom_queue_depth"][(("queue", "site.eu-frankfurt"),)]
    with Connection(
        settings.CELERY_BROKER_URL, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS
    ) as connection:
        waiting = connection.SimpleQueue("site.eu-frankfurt")
        waiting.put({"step": "waiting"})
        try:
            after = scrape()["cleanroom_queue_depth"][(("queue", "site.eu-frankfurt"),)]
        finally:
            waiting.get(timeout=5).ack()
            waiting.close()
    assert after == before + 1


def test_a_refusal_increments_its_counter(world, study, scrape):
    """An analyst asks to run a query no owner approved: the refusal is counted by its code."""
    query = propose(study, world.bob, world.pharma, sql=JOIN_SQL)
    key = (("code", "not_approved"),)
    before = scrape().get("cleanroom_refusals_total", {}).get(key, 0.0)
    response = api(world.bob).post(f"/api/rooms/{study.slug}/queries/{query.pk}/run/")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_approved"
    assert scrape()["cleanroom_refusals_total"][key] == before + 1


@pytest.fixture
def study(world, tmp_path):
    return world.study(tmp_path)


def test_job_durations_are_a_histogram_by_mechanism_and_state():
    finished = [
        ("tee", "succeeded", 4.0),
        ("tee", "succeeded", 40.0),
        ("mpc", "failed", 700.0),
    ]
    families = {f.name: f for f in Jobs(lambda: {"running": 1}, lambda: iter(finished)).collect()}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for s in families["cleanroom_job_duration_seconds"].samples
    }
    tee = (("mechanism", "tee"), ("state", "succeeded"))
    assert samples[("cleanroom_job_duration_seconds_count", tee)] == 2
    assert samples[("cleanroom_job_duration_seconds_sum", tee)] == 44.0
    le_5 = (("le", "5.0"), *tee)
    assert samples[("cleanroom_job_duration_seconds_bucket", le_5)] == 1
    mpc_inf = (("le", "+Inf"), ("mechanism", "mpc"), ("state", "failed"))
    assert samples[("cleanroom_job_duration_seconds_bucket", mpc_inf)] == 1
    assert families["cleanroom_jobs"].samples[0].value == 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_worker_serves_its_metrics_port_with_its_pool_s_task_durations(tmp_path):
    """A production-like worker: prefork pool, multiprocess metrics. Its child runs a task; the
    main process's port reports the task's duration."""
    port = _free_port()
    env = dict(
        os.environ,
        CLEANROOM_BOOTSTRAP="0",
        CLEANROOM_VAR_DIR=str(tmp_path / "var"),
        CLEANROOM_METRICS_PORT=str(port),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        CELERY_BROKER_URL="filesystem://localhost//",
    )
    env.pop("DATABASE_URL", None)
    worker = subprocess.Popen(
        [
            *(sys.executable, "-m", "celery", "-A", "cleanroom", "worker", "-Q", "metrics-test"),
            *("--pool", "prefork", "--concurrency", "1", "--loglevel", "INFO"),
            *("--without-mingle", "--without-gossip", "--hostname", "metrics-test@%h"),
        ],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in worker.stderr:
            if " ready." in line:
                break
        else:
            pytest.fail("the worker exited before it was ready")
        broker = tmp_path / "var" / "broker"
        client = Celery("metrics-test", set_as_current=False)
        client.conf.update(
            broker_url="filesystem://localhost//",
            broker_transport_options={
                "data_folder_in": str(broker / "queue"),
                "data_folder_out": str(broker / "queue"),
                "control_folder": str(broker / "control"),
            },
        )
        # The pool's child logs a task's success before its postrun handler records the
        # duration: a second task, run by the same single child, is the first one's fence.
        succeeded = 0
        for _ in range(2):
            client.send_task("celery.accumulate", args=[1, 2], queue="metrics-test")
            for line in worker.stderr:
                if "celery.accumulate" in line and "succeeded" in line:
                    succeeded += 1
                    break
        if succeeded < 2:
            pytest.fail("the worker exited before it ran the tasks")
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode()
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        worker.stderr.close()
    counts = {
        tuple(sorted(s.labels.items())): s.value
        for f in text_string_to_metric_families(body)
        for s in f.samples
        if s.name == "cleanroom_task_duration_seconds_count"
    }
    assert list(counts) == [(("state", "SUCCESS"), ("task", "celery.accumulate"))]
    assert counts[(("state", "SUCCESS"), ("task", "celery.accumulate"))] >= 1
