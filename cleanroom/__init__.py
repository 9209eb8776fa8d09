"""The clean room project: settings, the Celery app and the shared kernel (audit, crypto).

Nothing is imported here: the enclave imports modules of this package, and runs this file.
The Celery app is loaded with Django (jobs.apps) or by `celery -A cleanroom`."""
