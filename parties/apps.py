from django.apps import AppConfig


class PartiesConfig(AppConfig):
    name = "parties"
    verbose_name = "Parties and datasets"

    def ready(self) -> None:
        from axes.signals import user_locked_out

        from parties import services

        user_locked_out.connect(services.record_lockout, dispatch_uid="parties.lockout")
