from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "cleanroom.audit"
    label = "audit"
    verbose_name = "Audit log"
