"""The clean room project: settings, the Celery app and the shared kernel (audit, crypto)."""

# Load the Celery app with Django, so shared tasks publish to the configured broker.
from cleanroom.celery import app as celery_app

__all__ = ["celery_app"]
