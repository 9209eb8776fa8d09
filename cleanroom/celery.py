"""The Celery app. Workers run per site: `celery -A cleanroom worker -Q site.<name>`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cleanroom.settings")

app = Celery("cleanroom")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Data-plane steps name their site's queue explicitly; nothing may fall through to a default one.
app.conf.task_create_missing_queues = True
app.autodiscover_tasks()
