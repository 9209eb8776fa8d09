"""Append-only audit logs: one per room and one for the platform. Leaf i of a log is event i.

Every table here except the log heads, the log keys and the witnesses is append-only: the
database refuses UPDATE, DELETE and TRUNCATE (see `triggers.py`).
"""

import base64

from django.conf import settings
from django.db import models

from cleanroom.audit.verifier.notes import COSIGNATURE_ALGORITHM, ED25519_ALGORITHM


class AuditLog(models.Model):
    """The head of one log; its row lock serialises appends so sequence numbers stay gap-free.

    Appends only lock this row. `size` and `frontier` describe the log's stored Merkle tree:
    it covers the first `size` events, and `frontier` is its compact range (the hashes of its
    maximal complete subtrees, one per 1-bit of `size`), all the tree's extension needs to
    compute the nodes the next events complete (`tree.extend`, run by the checkpoint signer).
    """

    name = models.CharField(max_length=100, unique=True)
    size = models.PositiveBigIntegerField(default=0)
    frontier = models.BinaryField(default=b"", editable=False)

    def __str__(self) -> str:
        return self.name


class AuditEvent(models.Model):
    """One event as canonical JSON bytes. The database refuses UPDATE, DELETE and TRUNCATE."""

    log = models.ForeignKey(AuditLog, on_delete=models.PROTECT, related_name="events")
    seq = models.PositiveBigIntegerField()
    type = models.CharField(max_length=64)
    canonical = models.BinaryField()
    # SHA-256(0x00 || canonical), written with the event: the tree is built from the events
    # later, and refuses any whose bytes no longer hash to it.
    leaf_hash = models.BinaryField(max_length=32, null=True, editable=False)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["log", "seq"]
        constraints = [models.UniqueConstraint(fields=["log", "seq"], name="one_event_per_seq")]
        indexes = [models.Index(fields=["type"])]

    def __str__(self) -> str:
        return f"{self.log}#{self.seq} {self.type}"


class AuditNode(models.Model):
    """The hash of one complete subtree of a log's RFC 9162 tree, written once.

    Node `(level, index)` covers leaves `[index * 2**level, (index + 1) * 2**level)`; level 0
    holds the leaf hashes. They are written when the tree is extended over new events, so the
    root of any size and any proof take O(log n) rows, never a reread of the events.
    """

    pk = models.CompositePrimaryKey("log_id", "level", "index")
    log = models.ForeignKey(AuditLog, on_delete=models.PROTECT, related_name="+")
    level = models.PositiveSmallIntegerField()
    index = models.PositiveBigIntegerField()
    hash = models.BinaryField(max_length=32)

    def __str__(self) -> str:
        return f"{self.log_id}({self.level}, {self.index})"


class AuditEventRef(models.Model):
    """A stable id (`org:3`, `dataset:7`, `query:12`…) an event names, and where: `subject`
    or the `data` field holding it. An index for trails and filters; the evidence stays the
    event's canonical bytes."""

    pk = models.CompositePrimaryKey("event_id", "key", "ref")
    event = models.ForeignKey(AuditEvent, on_delete=models.PROTECT, related_name="refs")
    key = models.CharField(max_length=64)
    ref = models.CharField(max_length=100)

    class Meta:
        indexes = [models.Index(fields=["ref", "key"], name="audit_ref_lookup")]

    def __str__(self) -> str:
        return f"{self.event_id} {self.key}={self.ref}"


class AuditAttachment(models.Model):
    """A file an event references by SHA-256 (query text, evidence, policy), carried in bundles."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    content = models.BinaryField()
    size = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.sha256


class LogKey(models.Model):
    """The Ed25519 key that signs checkpoints and bundle manifests. The private half stays in
    the key service (`key_id`); the public half is here so anyone can print the vkey."""

    name = models.CharField(max_length=100)
    key_id = models.CharField(max_length=100, unique=True)
    note_key_id = models.CharField(max_length=8)
    public_key = models.BinaryField(max_length=32)
    created_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["name"],
                condition=models.Q(retired_at__isnull=True),
                name="one_current_log_key_per_name",
            )
        ]

    def __str__(self) -> str:
        return self.vkey

    @property
    def vkey(self) -> str:
        return vkey(self.name, self.note_key_id, bytes(self.public_key))


class Checkpoint(models.Model):
    """A signed C2SP tlog checkpoint of one log at one size; cosignatures are kept apart."""

    log = models.ForeignKey(AuditLog, on_delete=models.PROTECT, related_name="checkpoints")
    size = models.PositiveBigIntegerField()
    root_hash = models.BinaryField(max_length=32)
    note = models.TextField()
    key = models.ForeignKey(LogKey, on_delete=models.PROTECT, related_name="checkpoints")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["log", "-size"]
        constraints = [
            models.UniqueConstraint(fields=["log", "size"], name="one_checkpoint_per_size")
        ]

    def __str__(self) -> str:
        return f"{self.log} @ {self.size}"


class Witness(models.Model):
    """An organisation's witness: its Ed25519 key in the key service, and the log keys it
    pinned when it was enrolled (it checks checkpoints against those, not the platform's say)."""

    organization = models.OneToOneField(
        "parties.Organization", on_delete=models.PROTECT, related_name="audit_witness"
    )
    name = models.CharField(max_length=100, unique=True)
    key_id = models.CharField(max_length=100, unique=True)
    note_key_id = models.CharField(max_length=8)
    public_key = models.BinaryField(max_length=32)
    trusted_log_keys = models.TextField(help_text="Log vkeys this witness accepts, one a line.")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    @property
    def vkey(self) -> str:
        """Its C2SP tlog-cosignature key: type 0x04 (cosignature/v1, Ed25519)."""
        return vkey(self.name, self.note_key_id, bytes(self.public_key), COSIGNATURE_ALGORITHM)


class Cosignature(models.Model):
    """A witness's signature on a checkpoint, with the size and root the witness saw: its own
    memory of how far it has checked the log."""

    checkpoint = models.ForeignKey(
        Checkpoint, on_delete=models.PROTECT, related_name="cosignatures"
    )
    witness = models.ForeignKey(Witness, on_delete=models.PROTECT, related_name="cosignatures")
    size = models.PositiveBigIntegerField()
    root_hash = models.BinaryField(max_length=32)
    signature = models.TextField(help_text="The signed-note signature line, with its newline.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["checkpoint", "created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["checkpoint", "witness"], name="one_cosignature_per_witness"
            )
        ]

    def __str__(self) -> str:
        return f"{self.witness} on {self.checkpoint}"


class AuditBundle(models.Model):
    """A bundle (cleanroom-bundle/v1 zip) built and signed by a process holding the log key,
    kept for download: the production web tier serves bundles, it cannot make one."""

    log = models.ForeignKey(AuditLog, on_delete=models.PROTECT, related_name="bundles")
    tree_size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    content = models.BinaryField()
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["log", "-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.log} @ {self.tree_size}"


def vkey(name: str, note_key_id: str, public_key: bytes, algorithm: int = ED25519_ALGORITHM) -> str:
    """The signed-note verifier key string, `name+keyid+base64(algorithm || key)`."""
    typed = bytes([algorithm]) + public_key
    return f"{name}+{note_key_id}+{base64.b64encode(typed).decode('ascii')}"
