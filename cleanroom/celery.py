"""The Celery app. Workers run per site: `celery -A cleanroom worker -Q site.<name>`."""

import os

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cleanroom.settings")
# The embedded broker writes each message whole before a worker can take it (cleanroom/broker.py):
# every process that publishes or consumes loads this module first.
TRANSPORT_ALIASES["filesystem"] = "cleanroom.broker:FilesystemTransport"

app = Celery("cleanroom")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Data-plane steps name their site's queue explicitly; nothing may fall through to a default one.
app.conf.task_create_missing_queues = True
app.autodiscover_tasks()
