from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Rooms, queries and jobs"

    def ready(self) -> None:
        # The Celery app, which shared tasks publish through; loaded here rather than by the
        # cleanroom package, whose __init__ also runs in the enclave.
        import cleanroom.celery  # noqa: F401
        from jobs import checks, tasks  # noqa: F401 - checks registers the system checks
        from jobs.execution.outbox import use_queue

        use_queue(tasks.CeleryJobQueue())
