"""The clean room project: settings, the Celery app and the shared kernel (audit, crypto)."""
