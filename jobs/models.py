"""Collaborations: rooms, their member organisations and the datasets contributed to them."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from dataplane import mechanisms
from parties.models import AnalysisPolicy, Dataset, DatasetVersion, Organization, Site


class Room(models.Model):
    slug = models.SlugField(max_length=60, unique=True)
    name = models.CharField(max_length=200)
    purpose = models.TextField(blank=True)
    created_by_organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class RoomMembership(models.Model):
    class Status(models.TextChoices):
        INVITED = "invited", "Invited"
        ACTIVE = "active", "Member"
        DECLINED = "declined", "Declined"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="room_memberships"
    )
    status = models.CharField(max_length=16, choices=Status.choices)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", null=True
    )
    responded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", null=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    responded_at = models.DateTimeField(null=True)
    # The owner's kill switch for its participation: while set, none of its datasets plans,
    # runs or gets a key in this room (they still do in other rooms).
    suspended_at = models.DateTimeField(null=True, blank=True)
    suspended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )

    class Meta:
        ordering = ["room", "organization__name"]
        constraints = [
            models.UniqueConstraint(fields=["room", "organization"], name="one_membership_per_org")
        ]

    def __str__(self) -> str:
        return f"{self.organization} in {self.room} ({self.status})"


class RoomDataset(models.Model):
    """A dataset version contributed to a room, under a pinned version of its analysis policy."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="contributions")
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="contributions")
    version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="+")
    policy = models.ForeignKey(AnalysisPolicy, on_delete=models.PROTECT, related_name="+")
    contributed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    contributed_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["room", "dataset__organization__slug", "dataset__slug"]
        constraints = [
            models.UniqueConstraint(fields=["room", "dataset"], name="one_contribution_per_dataset")
        ]

    def __str__(self) -> str:
        return f"{self.dataset} in {self.room}"


class Query(models.Model):
    """One version of a joint query. Submitted versions are never edited: an edit is a new
    version in the same lineage, with no approvals."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PENDING = "pending_approval", "Waiting for approvals"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        SUPERSEDED = "superseded", "Replaced by a newer version"
        EXPIRED = "expired", "Expired"
        REVOKED = "revoked", "Approval revoked"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class Mechanism(models.TextChoices):
        """Automatic (the planner chooses), or one of the engines' mechanisms, with the data
        plane's values and labels (a test checks each mechanism has its choice)."""

        AUTO = "auto", "Automatic"
        MPC = mechanisms.Mechanism.MPC.value, mechanisms.Mechanism.MPC.label
        TEE = mechanisms.Mechanism.TEE.value, mechanisms.Mechanism.TEE.label

    class OutputKind(models.TextChoices):
        AGGREGATE = "aggregate", "Differentially private aggregates"
        SYNTHETIC = "synthetic", "Synthetic extract"

    class SyntheticMethod(models.TextChoices):
        # The values are dataplane.synthesis.Method's.
        DP_MARGINALS = "dp-marginals", "DP marginals (MST): differentially private"
        SDV_GAUSSIAN_COPULA = (
            "sdv-gaussian-copula",
            "SDV Gaussian copula: not differentially private",
        )
        SDV_CTGAN = "sdv-ctgan", "SDV CTGAN: not differentially private"

    room = models.ForeignKey(Room, on_delete=models.PROTECT, related_name="queries")
    lineage = models.UUIDField(db_index=True)
    version = models.PositiveIntegerField(default=1)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    author_organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="+"
    )
    title = models.CharField(max_length=200)
    purpose = models.TextField()
    sql = models.TextField()
    requested_mechanism = models.CharField(
        max_length=8, choices=Mechanism.choices, default=Mechanism.AUTO
    )
    # The planner's choice, fixed at submission.
    mechanism = models.CharField(max_length=8, choices=Mechanism.choices, blank=True)
    output_kind = models.CharField(
        max_length=16, choices=OutputKind.choices, default=OutputKind.AGGREGATE
    )
    epsilon = models.DecimalField(max_digits=8, decimal_places=4)
    delta = models.DecimalField(max_digits=12, decimal_places=12, default=0)
    # Synthetic extracts only: the method and how many rows to sample.
    synthetic_method = models.CharField(max_length=24, choices=SyntheticMethod.choices, blank=True)
    synthetic_rows = models.PositiveIntegerField(null=True, blank=True)
    receivers = models.ManyToManyField(Organization, related_name="+")
    expires_at = models.DateTimeField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    # Fixed at submission: what every approval signs, and the plan the owners saw.
    digest = models.CharField(max_length=64, blank=True)
    canonical = models.JSONField(null=True, blank=True)
    plan = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "queries"
        constraints = [
            models.UniqueConstraint(fields=["lineage", "version"], name="one_query_version"),
        ]

    def __str__(self) -> str:
        return f"{self.title} v{self.version}"

    @property
    def dataset_ids(self) -> list[int]:
        """The datasets this submitted version reads, as its canonical form names them."""
        if self.canonical is None:
            raise ValueError(f"The query {self.pk} was never submitted: it names no datasets yet.")
        return [int(item["dataset"].split(":")[1]) for item in self.canonical["datasets"]]


class Approval(models.Model):
    """An owner organisation's decision on one query version, made by one of its own
    credentials: `evidence` is the passkey's WebAuthn assertion or the machine key's signature
    over the approval message (cleanroom/audit/verifier/approvals.py), with the credential's
    id and public key, as the key services and verify.pyz check it."""

    class Decision(models.TextChoices):
        APPROVE = "approve", "Approved"
        REJECT = "reject", "Rejected"

    query = models.ForeignKey(Query, on_delete=models.PROTECT, related_name="approvals")
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=8, choices=Decision.choices)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    comment = models.TextField(blank=True)
    digest = models.CharField(max_length=64)
    credential = models.ForeignKey(
        "parties.ApprovalCredential", on_delete=models.PROTECT, related_name="approvals"
    )
    evidence = models.JSONField()
    decided_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        null=True,
        blank=True,
    )

    class Meta:
        ordering = ["query", "decided_at"]
        constraints = [
            # One live decision per organisation and query version; a revoked one may be redone.
            models.UniqueConstraint(
                fields=["query", "organization"],
                condition=models.Q(revoked_at__isnull=True),
                name="one_live_decision_per_org",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization} {self.decision} {self.query}"


class BudgetEntry(models.Model):
    """The privacy ledger of a dataset in a room: its balance is the sum of its entries."""

    class Kind(models.TextChoices):
        RESERVE = "reserve", "Reserved"
        SPEND = "spend", "Spent"
        REFUND = "refund", "Refunded"

    room = models.ForeignKey(Room, on_delete=models.PROTECT, related_name="budget_entries")
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="budget_entries")
    query = models.ForeignKey(Query, on_delete=models.PROTECT, related_name="budget_entries")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    epsilon = models.DecimalField(max_digits=8, decimal_places=4)
    delta = models.DecimalField(max_digits=12, decimal_places=12, default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["room", "dataset", "created_at"]
        verbose_name_plural = "budget entries"

    def __str__(self) -> str:
        return f"{self.kind} ε={self.epsilon} on {self.dataset}"


class Job(models.Model):
    """One run of an approved query version. A version runs at most once (one job per query);
    a crashed attempt is retried under the same job, never charged or released twice."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    query = models.OneToOneField(Query, on_delete=models.PROTECT, related_name="job")
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    mechanism = models.CharField(max_length=8)
    # Where a TEE job's one step runs; an MPC job's sites are those of its steps.
    site = models.ForeignKey(
        Site, on_delete=models.PROTECT, related_name="jobs", null=True, blank=True
    )
    attempt = models.PositiveIntegerField(default=0)
    progress = models.PositiveSmallIntegerField(default=0)
    progress_message = models.CharField(max_length=200, blank=True)
    # Set once the step was handed to the broker; the dispatcher resends jobs without it.
    dispatched_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # What the enclave proved about itself: kind (hardware or simulated), measurements, digest.
    attestation = models.JSONField(null=True, blank=True)
    # Set, once, when the job's keys leave the key service (the enclave's data keys, or the MPC
    # delivery key): from then a noisy value may exist, so the job is charged whatever the
    # host reports, and never runs again with fresh noise.
    charged_at = models.DateTimeField(null=True, blank=True)
    # The running attempt's lease (jobs/execution/leases.py): the site that holds it renews it
    # while it works; once it runs out the sweep sends the job again or ends it.
    lease_site = models.ForeignKey(
        Site, on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"job {self.pk} of {self.query}"

    @property
    def finished(self) -> bool:
        return self.state in (self.State.SUCCEEDED, self.State.FAILED, self.State.CANCELLED)


class JobStep(models.Model):
    """One step of an MPC job, at its own site: an owner's input step (pre-aggregate, share,
    seal a share to each party), a compute party's step (run its MPyC party process), and the
    delivery (recombine the noisy output shares, release). Each has its own state and attempt
    count under the job's row lock; `output` references what the step left for the next ones
    (sealed share files), never plaintext."""

    class Kind(models.TextChoices):
        """The stages a job of steps has (a TEE job's enclave stage has no step rows)."""

        INPUT = mechanisms.Stage.INPUT.value, mechanisms.Stage.INPUT.label
        COMPUTE = mechanisms.Stage.COMPUTE.value, mechanisms.Stage.COMPUTE.label
        DELIVER = mechanisms.Stage.DELIVER.value, mechanisms.Stage.DELIVER.label

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    job = models.ForeignKey(Job, on_delete=models.PROTECT, related_name="steps")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    # None for the delivery: it runs where the set of output shares is completed.
    site = models.ForeignKey(
        Site, on_delete=models.PROTECT, related_name="job_steps", null=True, blank=True
    )
    dataset = models.ForeignKey(
        Dataset, on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )
    party = models.PositiveSmallIntegerField(null=True, blank=True)  # 0-based, compute steps
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    attempt = models.PositiveIntegerField(default=0)
    # Set once the step's task was handed to the broker; the dispatcher resends steps without it.
    dispatched_at = models.DateTimeField(null=True, blank=True)
    output = models.JSONField(default=dict, blank=True)
    # The running attempt's lease, as the job's: held by the step's site (the delivery's by
    # the site of the compute step that claimed it).
    lease_site = models.ForeignKey(
        Site, on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["job", "name"], name="one_step_per_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name} of job {self.job_id}"


class Result(models.Model):
    """A released result, encrypted at rest under its own data key. The key is wrapped for each
    receiver organisation; only their members can have it unwrapped."""

    job = models.OneToOneField(Job, on_delete=models.PROTECT, related_name="result")
    ciphertext = models.BinaryField()
    # The salted commitment the audit log holds (result_commitment, audit/verifier/rules.py); the
    # salt is kept only encrypted under the result's data key, for the receivers.
    commitment = models.CharField(max_length=64)
    sealed_salt = models.BinaryField(default=b"")
    mechanism = models.CharField(max_length=8)
    epsilon = models.DecimalField(max_digits=8, decimal_places=4)
    simulated_tee = models.BooleanField(default=False)
    released_at = models.DateTimeField(auto_now_add=True)
    # A synthetic extract: the ciphertext holds its manifest and reports; its files are
    # ResultFiles. `delta` and `differentially_private` say what guarantee it carries.
    output_kind = models.CharField(
        max_length=16, choices=Query.OutputKind.choices, default=Query.OutputKind.AGGREGATE
    )
    delta = models.DecimalField(max_digits=12, decimal_places=12, default=0)
    differentially_private = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"result of {self.job}"


class ResultFile(models.Model):
    """A released file (a synthetic extract or one of its reports), encrypted under its
    result's data key and stored outside the database, as extracts can be large."""

    result = models.ForeignKey(Result, on_delete=models.PROTECT, related_name="files")
    name = models.CharField(max_length=100)
    commitment = models.CharField(max_length=64)  # salted with its result's salt, as audited
    size = models.PositiveBigIntegerField()
    storage_path = models.CharField(max_length=500)  # under jobs.results.root()

    class Meta:
        ordering = ["result", "name"]
        constraints = [
            models.UniqueConstraint(fields=["result", "name"], name="one_file_name_per_result")
        ]

    def __str__(self) -> str:
        return f"{self.name} of {self.result}"


class ResultKey(models.Model):
    result = models.ForeignKey(Result, on_delete=models.PROTECT, related_name="keys")
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    wrapped_key = models.BinaryField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["result", "organization"], name="one_key_per_receiver")
        ]

    def __str__(self) -> str:
        return f"key of {self.result} for {self.organization}"


class SiteRequestNonce(models.Model):
    """A nonce a site signed a site API request with, kept until a request with its timestamp
    could no longer be accepted, so the same signed request is never accepted twice."""

    nonce = models.CharField(max_length=32, primary_key=True)
    site = models.CharField(max_length=100)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.site}: {self.nonce}"
