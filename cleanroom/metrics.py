"""Every Prometheus metric the clean room exposes, defined here and nowhere else.

Each role serves them: the web tier at `/metrics` (with a bearer token), every Celery worker and
beat on the port CLEANROOM_METRICS_PORT names, a key service on its `--metrics-port`
(deploy/README.md, "Metrics"). This module imports no Django and no app, so that the key
service, its own program, counts its refusals here too; the control plane's figures that come
from the database and the broker at scrape time (queue depth, job durations) are collectors fed
by functions the caller gives (cleanroom/monitoring.py).

A process whose environment names PROMETHEUS_MULTIPROC_DIR (gunicorn's workers, a prefork
worker's children) writes its counters there and the process that serves them adds them up;
without it (the embedded default's single-process workers) each process serves its own.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

# Seconds: a step takes from well under a second (an input step) to the enclave's limit (600 s).
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

REFUSALS = Counter(
    "cleanroom_refusals",
    "Requests and steps refused, by the refusal's code (a domain refusal's code, or a key"
    " service's `keyservice_<operation>`, `keyservice_unauthenticated`).",
    ["code"],
)
TASK_DURATION = Histogram(
    "cleanroom_task_duration_seconds",
    "Celery tasks run by this worker (a site's steps, the control and audit tasks), by task"
    " name and Celery's final state.",
    ["task", "state"],
    buckets=DURATION_BUCKETS,
)
QUEUE_DEPTH = "cleanroom_queue_depth"
BROKER_UP = "cleanroom_broker_up"
JOBS = "cleanroom_jobs"
JOB_DURATION = "cleanroom_job_duration_seconds"


def count_refusal(code: str) -> None:
    REFUSALS.labels(code=code).inc()


class QueueDepth(Collector):
    """Messages waiting on each queue, asked of the broker at every scrape; `depths` returns
    them by queue name and raises OSError (or any kombu error) when the broker is out of reach,
    which `cleanroom_broker_up` then reports as 0."""

    def __init__(self, depths: Callable[[], Mapping[str, int]]):
        self.depths = depths

    def collect(self) -> Iterator[Metric]:
        queue = GaugeMetricFamily(QUEUE_DEPTH, "Messages waiting on the queue.", labels=["queue"])
        up = GaugeMetricFamily(BROKER_UP, "1 when the broker answered this scrape, else 0.")
        try:
            depths = self.depths()
        except Exception:  # the broker's failure is what this scrape reports, not an error
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
            for name, depth in sorted(depths.items()):
                queue.add_metric([name], depth)
        yield queue
        yield up


class Jobs(Collector):
    """Jobs by state now, and the durations of finished jobs, from the database at every
    scrape: whichever worker finished a job, and across restarts, the figures agree with it.
    `states` gives counts by state; `durations` (mechanism, state, seconds) per finished job."""

    def __init__(
        self,
        states: Callable[[], Mapping[str, int]],
        durations: Callable[[], Iterable[tuple[str, str, float]]],
    ):
        self.states = states
        self.durations = durations

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(JOBS, "Jobs by state.", labels=["state"])
        for state, count in sorted(self.states().items()):
            jobs.add_metric([state], count)
        yield jobs
        observed: dict[tuple[str, str], list[float]] = {}
        for mechanism, state, seconds in self.durations():
            observed.setdefault((mechanism, state), []).append(seconds)
        durations = HistogramMetricFamily(
            JOB_DURATION,
            "Finished jobs, from start to end, by mechanism and final state.",
            labels=["mechanism", "state"],
        )
        for labels, each in sorted(observed.items()):
            buckets = [(str(float(le)), sum(s <= le for s in each)) for le in DURATION_BUCKETS]
            buckets.append(("+Inf", len(each)))
            durations.add_metric(list(labels), buckets, sum(each))
        yield durations


def process_registry() -> CollectorRegistry:
    """This process's metrics, or every process's of its role in multiprocess mode."""
    if not os.environ.get(MULTIPROCESS_DIR):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def exposition(*collectors: Collector) -> bytes:
    """The text Prometheus scrapes: this process's (or role's) metrics, then the collectors'."""
    control_plane = CollectorRegistry()
    for collector in collectors:
        control_plane.register(collector)
    return generate_latest(process_registry()) + generate_latest(control_plane)


def serve(port: int, address: str) -> int:
    """Serve this process's metrics on `port` (0: any free port), in a thread; return the port.
    Prometheus's client answers every path with the metrics, so `/metrics` and a health check's
    `GET /` alike prove the process that runs the role is alive."""
    server, _ = start_http_server(port, address, registry=process_registry())
    return server.server_port


def start_multiprocess_dir() -> None:
    """Empty the role's multiprocess folder when the role starts: files of processes from
    before a restart would be added to its counters."""
    folder = os.environ.get(MULTIPROCESS_DIR)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        Path(folder).mkdir(parents=True, exist_ok=True)
