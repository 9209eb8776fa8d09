"""Append-only audit logs: one per room and one for the platform. Leaf i of a log is event i."""

from django.db import models


class AuditLog(models.Model):
    """The head of one log; its row lock serialises appends so sequence numbers stay gap-free."""

    name = models.CharField(max_length=100, unique=True)
    size = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return self.name


class AuditEvent(models.Model):
    """One event as canonical JSON bytes. The database refuses UPDATE, DELETE and TRUNCATE."""

    log = models.ForeignKey(AuditLog, on_delete=models.PROTECT, related_name="events")
    seq = models.PositiveBigIntegerField()
    type = models.CharField(max_length=64)
    canonical = models.BinaryField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["log", "seq"]
        constraints = [models.UniqueConstraint(fields=["log", "seq"], name="one_event_per_seq")]
        indexes = [models.Index(fields=["type"])]

    def __str__(self) -> str:
        return f"{self.log}#{self.seq} {self.type}"
