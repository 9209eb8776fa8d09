"""Who takes part and what they bring: organisations, authorities, jurisdictions, datasets."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

from cleanroom.audit.verifier.approvals import MACHINE_KEY, PASSKEY, PinnedCredential
from cleanroom.residency import Place, Receiver, SiteKind, TransferRules
from dataplane import mechanisms
from dataplane.sql.plan import AggregateKind, ColumnRole

# Organisation and dataset names appear in queries as `org.dataset`: plain SQL identifiers.
identifier = RegexValidator(
    r"^[a-z][a-z0-9_]{0,49}$",
    "Use lowercase letters, digits and underscores, starting with a letter: the name appears "
    "in queries as org.dataset.",
)


class Jurisdiction(models.Model):
    """A legal area data can be pinned to, with its transfer rules (cleanroom/residency.py)."""

    code = models.CharField(max_length=8, unique=True)
    name = models.CharField(max_length=100)
    legal_framework = models.CharField(max_length=200)
    # Where rows pinned here may be processed in plaintext by an ordinary worker.
    raw_processing_in = models.ManyToManyField(
        "self", symmetrical=False, related_name="+", blank=True
    )
    # Where rows pinned here may be processed inside an attested enclave (a TEE site).
    enclave_processing_in = models.ManyToManyField(
        "self", symmetrical=False, related_name="+", blank=True
    )
    # Where secret shares of data pinned here may be sent; empty means they may not leave.
    shares_may_go_to = models.ManyToManyField(
        "self", symmetrical=False, related_name="+", blank=True
    )
    # Where differentially private outputs computed from data pinned here may be delivered.
    outputs_may_go_to = models.ManyToManyField(
        "self", symmetrical=False, related_name="+", blank=True
    )

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code

    def rules(self) -> TransferRules:
        """The transfer rules as the residency decision reads them."""

        def codes(related) -> frozenset[str]:
            return frozenset(related.values_list("code", flat=True))

        return TransferRules(
            code=self.code,
            raw_processing_in=codes(self.raw_processing_in),
            enclave_processing_in=codes(self.enclave_processing_in),
            shares_may_go_to=codes(self.shares_may_go_to),
            outputs_may_go_to=codes(self.outputs_may_go_to),
        )


class Site(models.Model):
    """A place where data-plane work runs; its Celery queue is `site.<name>`."""

    class Kind(models.TextChoices):
        WORKER = SiteKind.WORKER.value, "Worker"
        MPC_PARTY = SiteKind.MPC_PARTY.value, "MPC party"
        TEE = SiteKind.TEE.value, "Trusted execution environment"

    name = models.SlugField(max_length=64, unique=True)
    jurisdiction = models.ForeignKey(Jurisdiction, on_delete=models.PROTECT, related_name="sites")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    description = models.CharField(max_length=200, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["jurisdiction__code", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queue(self) -> str:
        return f"site.{self.name}"

    def place(self) -> Place:
        return Place(self.name, SiteKind(self.kind), self.jurisdiction.code, self.active)


class Organization(models.Model):
    slug = models.SlugField(max_length=50, unique=True, validators=[identifier])
    name = models.CharField(max_length=200)
    # Where the organisation is established: results delivered to it go there.
    jurisdiction = models.ForeignKey(
        Jurisdiction, on_delete=models.PROTECT, related_name="organizations"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def receiver(self) -> Receiver:
        return Receiver(f"org:{self.pk}", self.name, self.jurisdiction.code)


class ApprovalCredential(models.Model):
    """A credential whose private half is never on the platform: a member's passkey (WebAuthn),
    which signs its holder in and, registered for an organisation, approves for it; or a
    machine key (Ed25519) an organisation holds itself for automated approvals. A passkey
    registered for no organisation signs in and approves nothing. Removal keeps the row
    (approvals name it) and ends its use."""

    class Kind(models.TextChoices):
        PASSKEY = PASSKEY, "Passkey"
        MACHINE_KEY = MACHINE_KEY, "Machine key"

    # The organisation it approves for; none for a passkey that only signs in.
    organization = models.ForeignKey(
        Organization,
        on_delete=models.PROTECT,
        related_name="approval_credentials",
        null=True,
        blank=True,
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # The passkey's holder; none for a machine key.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="passkeys",
        null=True,
        blank=True,
    )
    registered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    name = models.CharField(max_length=100)
    credential_id = models.BinaryField(max_length=1023, unique=True)
    # A passkey's COSE key; a machine key's raw Ed25519 public key.
    public_key = models.BinaryField(max_length=2048)
    rp_id = models.CharField(max_length=253, blank=True)  # a passkey's relying party
    sign_count = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["organization", "created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind=PASSKEY) | models.Q(organization__isnull=False),
                name="machine_key_of_an_organization",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.name} of {self.organization or self.user}"

    def pinned(self) -> PinnedCredential:
        """As a key service or a regulator pins it (its organisation "" if it approves
        nothing)."""
        return PinnedCredential(
            organization=f"org:{self.organization_id}" if self.organization_id else "",
            kind=self.kind,
            credential_id=bytes(self.credential_id),
            public_key=bytes(self.public_key),
            rp_id=self.rp_id,
        )


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Data owner"
        ANALYST = "analyst", "Analyst"
        AUDITOR = "auditor", "Auditor"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "organization", "role"], name="one_role_once")
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.role} of {self.organization}"


class Authority(models.Model):
    """A regulator, scoped to jurisdictions: it downloads audit bundles, never data or results."""

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    jurisdictions = models.ManyToManyField(Jurisdiction, related_name="authorities")
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="authorities")

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "authorities"

    def __str__(self) -> str:
        return self.name


class Dataset(models.Model):
    """A dataset of one organisation, pinned to one jurisdiction for its whole life."""

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="datasets"
    )
    slug = models.SlugField(max_length=50, validators=[identifier])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    jurisdiction = models.ForeignKey(
        Jurisdiction, on_delete=models.PROTECT, related_name="datasets"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # The owner's kill switch: while set, no query plans, runs or gets a key for this dataset.
    suspended_at = models.DateTimeField(null=True, blank=True)
    suspended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )

    class Meta:
        ordering = ["organization__slug", "slug"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "slug"], name="dataset_slug_per_org")
        ]

    def __str__(self) -> str:
        return self.qualified_name

    @property
    def qualified_name(self) -> str:
        """The name queries use: `org_slug.dataset_slug`."""
        return f"{self.organization.slug}.{self.slug}"


class DatasetVersion(models.Model):
    """An immutable upload: its plaintext never leaves the encrypted file at `storage_path`."""

    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        PARQUET = "parquet", "Parquet"

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    source_format = models.CharField(max_length=8, choices=Format.choices)
    # SHA-256 of the file as uploaded, so an owner can check it against their own copy.
    content_sha256 = models.CharField(max_length=64)
    # SHA-256 of the encrypted file at rest, to detect tampering or loss in storage.
    ciphertext_sha256 = models.CharField(max_length=64)
    row_count = models.PositiveBigIntegerField()
    stored_bytes = models.PositiveBigIntegerField()
    # Relative to the storage root of the dataset's jurisdiction.
    storage_path = models.CharField(max_length=500)
    kek_id = models.CharField(max_length=100)
    wrapped_data_key = models.BinaryField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="version_number_per_dataset")
        ]

    def __str__(self) -> str:
        return f"{self.dataset} v{self.number}"

    @property
    def key_context(self) -> dict[str, str]:
        """What the wrapped data key is bound to."""
        return {
            "dataset": str(self.dataset_id),
            "version": str(self.number),
            "content_sha256": self.content_sha256,
        }


class Column(models.Model):
    class Type(models.TextChoices):
        INTEGER = "integer", "Integer"
        FLOAT = "float", "Decimal number"
        STRING = "string", "Text"
        BOOLEAN = "boolean", "True/false"
        DATE = "date", "Date"

    class Role(models.TextChoices):
        """The data plane's column roles, values and labels (a test checks each has its choice)."""

        UNIT = ColumnRole.UNIT.value, ColumnRole.UNIT.label
        JOIN_KEY = ColumnRole.JOIN_KEY.value, ColumnRole.JOIN_KEY.label
        DIMENSION = ColumnRole.DIMENSION.value, ColumnRole.DIMENSION.label
        MEASURE = ColumnRole.MEASURE.value, ColumnRole.MEASURE.label
        OTHER = ColumnRole.OTHER.value, ColumnRole.OTHER.label

    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="columns")
    position = models.PositiveIntegerField()
    name = models.CharField(max_length=100)
    type = models.CharField(max_length=16, choices=Type.choices)
    role = models.CharField(max_length=16, choices=Role.choices)
    # Dimensions: the public domain of values, so the set of output groups reveals nothing.
    domain = models.JSONField(default=list, blank=True)
    # Measures: values are clamped to [lower, upper] before any aggregate.
    lower = models.DecimalField(max_digits=30, decimal_places=10, null=True, blank=True)
    upper = models.DecimalField(max_digits=30, decimal_places=10, null=True, blank=True)

    class Meta:
        ordering = ["version", "position"]
        constraints = [
            models.UniqueConstraint(fields=["version", "name"], name="column_name_per_version"),
        ]

    def __str__(self) -> str:
        return self.name


class AnalysisPolicy(models.Model):
    """What may be computed from a dataset. Never edited: each change is a new version."""

    # The data plane's values and labels (a test checks each member has its choice).
    class Mechanism(models.TextChoices):
        MPC = mechanisms.Mechanism.MPC.value, mechanisms.Mechanism.MPC.label
        TEE = mechanisms.Mechanism.TEE.value, mechanisms.Mechanism.TEE.label

    class Aggregate(models.TextChoices):
        COUNT = AggregateKind.COUNT.value, AggregateKind.COUNT.label
        SUM = AggregateKind.SUM.value, AggregateKind.SUM.label
        AVG = AggregateKind.AVG.value, AggregateKind.AVG.label

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="policies")
    version = models.PositiveIntegerField()
    allowed_join_keys = models.JSONField(default=list, blank=True)
    allowed_dimensions = models.JSONField(default=list, blank=True)
    allowed_measures = models.JSONField(default=list, blank=True)
    allowed_filters = models.JSONField(default=list, blank=True)
    allowed_aggregates = models.JSONField(default=list, blank=True)
    allowed_mechanisms = models.JSONField(default=list, blank=True)
    allowed_receivers = models.ManyToManyField(Organization, related_name="+", blank=True)
    min_group_size = models.PositiveIntegerField(default=10)
    # Contribution bound: at most this many rows per privacy unit enter any aggregate.
    max_rows_per_unit = models.PositiveIntegerField(default=1)
    max_epsilon_per_query = models.DecimalField(
        max_digits=8, decimal_places=4, validators=[MinValueValidator(Decimal("0.0001"))]
    )
    total_epsilon = models.DecimalField(
        max_digits=8, decimal_places=4, validators=[MinValueValidator(Decimal("0.0001"))]
    )
    total_delta = models.DecimalField(
        max_digits=12, decimal_places=12, default=Decimal(0), validators=[MinValueValidator(0)]
    )
    # Synthetic extracts (row-level output from a model fitted in the TEE): off until the owner
    # opts in. The differentially private method is charged to the budget like any query; the
    # SDV methods carry no formal guarantee and need the second switch as well.
    synthetic_allowed = models.BooleanField(default=False)
    non_dp_synthetic_allowed = models.BooleanField(default=False)
    max_synthetic_rows = models.PositiveIntegerField(
        default=100_000, validators=[MinValueValidator(1)]
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "-version"]
        verbose_name_plural = "analysis policies"
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "version"], name="policy_version_per_dataset"
            ),
        ]

    def __str__(self) -> str:
        return f"policy v{self.version} of {self.dataset}"
