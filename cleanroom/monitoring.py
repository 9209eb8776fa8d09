"""What the web tier's `/metrics` reads at each scrape, besides its processes' counters: the
depth of every queue (control, audit, and each active site's `site.<name>`) asked of the broker,
and the jobs by state and the finished jobs' durations from the database. The metrics
themselves are defined in cleanroom/metrics.py."""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings
from django.db.models import Count
from kombu import Connection
from kombu.exceptions import ChannelError

from cleanroom.metrics import Jobs, QueueDepth
from jobs.models import Job
from parties.models import Site

# A scrape must not hang on a broker that is out of reach.
BROKER_TIMEOUT = 5.0


def queue_names() -> list[str]:
    sites = Site.objects.filter(active=True).order_by("name")
    return [settings.CELERY_TASK_DEFAULT_QUEUE, "audit", *(site.queue for site in sites)]


def queue_depths() -> dict[str, int]:
    """Messages waiting on each queue; a queue the broker does not have yet holds none."""
    depths = {}
    with Connection(
        settings.CELERY_BROKER_URL,
        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        connect_timeout=BROKER_TIMEOUT,
    ) as connection:
        connection.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT)
        for name in queue_names():
            # A channel each: AMQP closes the channel that asked for a queue it does not have.
            with connection.channel() as channel:
                try:
                    depths[name] = channel.queue_declare(queue=name, passive=True).message_count
                except ChannelError:
                    depths[name] = 0
    return depths


def job_states() -> dict[str, int]:
    counts = Job.objects.order_by().values("state").annotate(n=Count("pk"))
    return {row["state"]: row["n"] for row in counts}


def finished_job_durations() -> Iterator[tuple[str, str, float]]:
    finished = Job.objects.filter(started_at__isnull=False, finished_at__isnull=False)
    rows = finished.values_list("mechanism", "state", "started_at", "finished_at")
    for mechanism, state, started, ended in rows.iterator():
        if started and ended:  # as filtered: the check is for the type checker
            yield mechanism, state, (ended - started).total_seconds()


def control_plane_collectors() -> list:
    return [QueueDepth(queue_depths), Jobs(job_states, finished_job_durations)]
