from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "cleanroom.audit"
    label = "audit"
    verbose_name = "Audit log"

    def ready(self) -> None:
        # The audit worker's tasks plug into the kernel here, so the kernel imports no tasks.
        from cleanroom.audit import checkpoints, tasks

        checkpoints.use_queue(tasks.CeleryAuditQueue())
