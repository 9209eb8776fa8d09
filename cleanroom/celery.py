"""The Celery app. Workers run per site: `celery -A cleanroom worker -Q site.<name>`."""

import os
import time

from celery import Celery, signals
from django.conf import settings
from kombu.transport import TRANSPORT_ALIASES

from cleanroom import metrics

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cleanroom.settings")
# The embedded broker writes each message whole before a worker can take it (cleanroom/broker.py):
# every process that publishes or consumes loads this module first.
TRANSPORT_ALIASES["filesystem"] = "cleanroom.broker:FilesystemTransport"

app = Celery("cleanroom")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Data-plane steps name their site's queue explicitly; nothing may fall through to a default one.
app.conf.task_create_missing_queues = True
app.autodiscover_tasks()

# When each running task started, by task id, in the process that runs it.
_started: dict[str, float] = {}


@signals.worker_init.connect
@signals.beat_init.connect
def serve_metrics(**_) -> None:
    """A worker's or beat's metrics port (CLEANROOM_METRICS_PORT; none when 0), served by its
    main process, which adds up its pool's processes in multiprocess mode (cleanroom/metrics.py)."""
    if settings.METRICS_PORT:
        metrics.start_multiprocess_dir()
        metrics.serve(settings.METRICS_PORT, settings.METRICS_ADDRESS)


@signals.task_prerun.connect
def task_started(task_id: str, **_) -> None:
    _started[task_id] = time.monotonic()


@signals.task_postrun.connect
def task_finished(task_id: str, task, state: str | None = None, **_) -> None:
    started = _started.pop(task_id, None)
    if started is not None:
        metrics.TASK_DURATION.labels(task=task.name, state=state or "UNKNOWN").observe(
            time.monotonic() - started
        )
