from rest_framework import serializers

from jobs.models import (
    Approval,
    Job,
    JobStep,
    Query,
    Result,
    Room,
    RoomDataset,
    RoomMembership,
)
from jobs.queries import verify_approval
from parties.models import Organization


class RoomMembershipSerializer(serializers.ModelSerializer):
    organization = serializers.SlugRelatedField(read_only=True, slug_field="slug")
    invited_by = serializers.SlugRelatedField(
        read_only=True, slug_field="username", allow_null=True
    )

    class Meta:
        model = RoomMembership
        fields = [
            "organization",
            "status",
            "invited_by",
            "created_at",
            "responded_at",
            "suspended_at",
        ]


class RoomDatasetSerializer(serializers.ModelSerializer):
    dataset = serializers.CharField(source="dataset.qualified_name", read_only=True)
    jurisdiction = serializers.CharField(source="dataset.jurisdiction.code", read_only=True)
    version = serializers.IntegerField(source="version.number", read_only=True)
    policy_version = serializers.IntegerField(source="policy.version", read_only=True)

    class Meta:
        model = RoomDataset
        fields = ["dataset", "jurisdiction", "version", "policy_version", "contributed_at"]


class RoomSerializer(serializers.ModelSerializer):
    created_by_organization = serializers.SlugRelatedField(read_only=True, slug_field="slug")
    memberships = RoomMembershipSerializer(many=True, read_only=True)
    contributions = RoomDatasetSerializer(many=True, read_only=True)

    class Meta:
        model = Room
        fields = [
            "slug",
            "name",
            "purpose",
            "created_by_organization",
            "created_at",
            "memberships",
            "contributions",
        ]


class RoomInputSerializer(serializers.Serializer):
    organization = serializers.SlugField(help_text="The organisation creating the room.")
    slug = serializers.SlugField(max_length=60)
    name = serializers.CharField(max_length=200)
    purpose = serializers.CharField(required=False, allow_blank=True, default="")


class InvitationInputSerializer(serializers.Serializer):
    organization = serializers.SlugField(help_text="The organisation to invite.")


class InvitationResponseSerializer(serializers.Serializer):
    organization = serializers.SlugField(
        required=False, help_text="Which of your organisations answers (if you are in several)."
    )


class ContributionInputSerializer(serializers.Serializer):
    dataset = serializers.CharField(help_text="`org_slug.dataset_slug`")
    version = serializers.IntegerField(required=False, help_text="Defaults to the latest.")


class ApprovalSerializer(serializers.ModelSerializer):
    organization = serializers.SlugRelatedField(read_only=True, slug_field="slug")
    credential = serializers.SerializerMethodField()
    verified = serializers.SerializerMethodField()

    class Meta:
        model = Approval
        fields = [
            "id",
            "organization",
            "decision",
            "comment",
            "digest",
            "credential",
            "evidence",
            "verified",
            "decided_at",
            "revoked_at",
        ]

    def get_credential(self, approval: Approval) -> dict[str, str]:
        """Which of the organisation's credentials decided: its kind, name and holder."""
        credential = approval.credential
        return {
            "kind": credential.kind,
            "name": credential.name,
            "holder": credential.user.username if credential.user else "",
        }

    def get_verified(self, approval: Approval) -> bool:
        return verify_approval(approval)


class QuerySerializer(serializers.ModelSerializer):
    room = serializers.SlugRelatedField(read_only=True, slug_field="slug")
    author_organization = serializers.SlugRelatedField(read_only=True, slug_field="slug")
    receivers = serializers.SlugRelatedField(many=True, read_only=True, slug_field="slug")
    approvals = ApprovalSerializer(many=True, read_only=True)
    canonical = serializers.JSONField(
        read_only=True,
        allow_null=True,
        help_text="Everything an approval binds; `digest` is SHA-256 of its canonical JSON "
        "(sorted keys, no whitespace, UTF-8), so an owner's client recomputes it before signing. "
        "Null for a draft.",
    )

    class Meta:
        model = Query
        fields = [
            "id",
            "room",
            "lineage",
            "version",
            "title",
            "purpose",
            "sql",
            "requested_mechanism",
            "mechanism",
            "output_kind",
            "synthetic_method",
            "synthetic_rows",
            "epsilon",
            "delta",
            "receivers",
            "expires_at",
            "status",
            "digest",
            "canonical",
            "plan",
            "author_organization",
            "approvals",
            "created_at",
            "submitted_at",
        ]


class InboxItemSerializer(serializers.Serializer):
    """A query version waiting for the decision of one of the caller's organisations."""

    organization = serializers.SlugField(help_text="The organisation whose decision it awaits.")
    query = QuerySerializer()


class QueryInputSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    purpose = serializers.CharField()
    sql = serializers.CharField()
    requested_mechanism = serializers.ChoiceField(
        choices=Query.Mechanism.choices, default=Query.Mechanism.AUTO
    )
    epsilon = serializers.DecimalField(max_digits=8, decimal_places=4)
    delta = serializers.DecimalField(max_digits=13, decimal_places=12, default=0)
    receivers = serializers.SlugRelatedField(
        many=True, slug_field="slug", queryset=Organization.objects.all()
    )
    expires_at = serializers.DateTimeField()
    output_kind = serializers.ChoiceField(
        choices=Query.OutputKind.choices, default=Query.OutputKind.AGGREGATE
    )
    synthetic_method = serializers.ChoiceField(
        choices=Query.SyntheticMethod.choices,
        required=False,
        allow_blank=True,
        help_text="For a synthetic extract; defaults to dp-marginals (differentially private).",
    )
    synthetic_rows = serializers.IntegerField(
        min_value=1, required=False, allow_null=True, help_text="For a synthetic extract."
    )
    submit = serializers.BooleanField(default=False, help_text="Submit for approval right away.")

    def validate(self, data):
        return _synthetic_fields(data)


class QueryPatchSerializer(QueryInputSerializer):
    """Changes to a draft, or to a submitted version (which makes a new draft version)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, partial=True, **kwargs)


def _synthetic_fields(data: dict) -> dict:
    """The method defaults to the DP one for an extract; aggregates take neither field."""
    kind = data.get("output_kind")
    if kind == Query.OutputKind.SYNTHETIC:
        data["synthetic_method"] = data.get("synthetic_method") or (
            Query.SyntheticMethod.DP_MARGINALS
        )
    elif kind == Query.OutputKind.AGGREGATE:
        data["synthetic_method"], data["synthetic_rows"] = "", None
    return data


class PlanInputSerializer(serializers.Serializer):
    sql = serializers.CharField()
    requested_mechanism = serializers.ChoiceField(
        choices=Query.Mechanism.choices, default=Query.Mechanism.AUTO
    )
    epsilon = serializers.DecimalField(max_digits=8, decimal_places=4)
    delta = serializers.DecimalField(max_digits=13, decimal_places=12, default=0)
    receivers = serializers.SlugRelatedField(
        many=True, slug_field="slug", queryset=Organization.objects.all(), default=list
    )
    output_kind = serializers.ChoiceField(
        choices=Query.OutputKind.choices, default=Query.OutputKind.AGGREGATE
    )
    synthetic_method = serializers.ChoiceField(
        choices=Query.SyntheticMethod.choices, required=False, allow_blank=True
    )
    synthetic_rows = serializers.IntegerField(min_value=1, required=False, allow_null=True)

    def validate(self, data):
        return _synthetic_fields(data)


class DecisionInputSerializer(serializers.Serializer):
    organization = serializers.SlugField(
        required=False, help_text="Which of your organisations decides (if several do)."
    )
    comment = serializers.CharField(required=False, allow_blank=True, default="")
    assertion = serializers.JSONField(
        required=False,
        default=None,
        help_text=(
            "The owner's answer to the decision's challenge: the passkey's PublicKeyCredential "
            'JSON, or {"type": "machine-key", "credential_id", "signature"} (base64) for a '
            "machine key's detached Ed25519 signature over the approval message."
        ),
    )


class JobStepSerializer(serializers.ModelSerializer):
    """An MPC job's step and the site it runs at (none for the delivery)."""

    site = serializers.SlugRelatedField(read_only=True, slug_field="name", allow_null=True)
    jurisdiction = serializers.CharField(
        source="site.jurisdiction.code", default=None, allow_null=True
    )

    class Meta:
        model = JobStep
        fields = ["name", "kind", "site", "jurisdiction", "party", "state", "attempt", "error"]


class JobSerializer(serializers.ModelSerializer):
    query = serializers.PrimaryKeyRelatedField(read_only=True)
    # None for an MPC job: its steps run at their own sites.
    site = serializers.SlugRelatedField(read_only=True, slug_field="name", allow_null=True)
    steps = JobStepSerializer(many=True, read_only=True)
    simulated_tee = serializers.SerializerMethodField()
    has_result = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id",
            "query",
            "state",
            "mechanism",
            "site",
            "steps",
            "attempt",
            "progress",
            "progress_message",
            "attestation",
            "simulated_tee",
            "error",
            "has_result",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_simulated_tee(self, job: Job) -> bool:
        return (job.attestation or {}).get("kind") == "simulated"

    def get_has_result(self, job: Job) -> bool:
        return Result.objects.filter(job=job).exists()


class BudgetSerializer(serializers.Serializer):
    """A dataset's one lifetime balance (over every room), and what this room used of it."""

    dataset = serializers.CharField(source="contribution.dataset.qualified_name")
    total_epsilon = serializers.DecimalField(source="total", max_digits=8, decimal_places=4)
    spent_epsilon = serializers.DecimalField(source="spent", max_digits=8, decimal_places=4)
    reserved_epsilon = serializers.DecimalField(source="reserved", max_digits=8, decimal_places=4)
    remaining_epsilon = serializers.DecimalField(source="remaining", max_digits=8, decimal_places=4)
    used_epsilon_in_room = serializers.DecimalField(
        source="used_in_room", max_digits=8, decimal_places=4
    )
    used_epsilon_elsewhere = serializers.DecimalField(
        source="used_elsewhere", max_digits=8, decimal_places=4
    )
    total_delta = serializers.DecimalField(max_digits=13, decimal_places=12)
    remaining_delta = serializers.DecimalField(max_digits=13, decimal_places=12)


# The planner's report and a released result, described for the API's schema (the views return
# `Plan.as_dict()` and the result's JSON as they are); clients, the project's own among them
# (cleanroom/client), are checked against these descriptions.


class PlanCheckSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="language, budget, receivers, mechanism, residency, ...")
    ok = serializers.BooleanField()
    message = serializers.CharField()


class PlanMechanismSerializer(serializers.Serializer):
    chosen = serializers.CharField(
        allow_null=True, help_text="mpc or tee; null if none can run it."
    )
    reason = serializers.CharField()


class PlanOwnerSerializer(serializers.Serializer):
    slug = serializers.SlugField()
    name = serializers.CharField()


class PlanDatasetSerializer(serializers.Serializer):
    """What the query would charge a dataset it reads, and whether its budget still fits it."""

    name = serializers.CharField(help_text="`org.dataset`")
    owner = PlanOwnerSerializer()
    jurisdiction = serializers.CharField()
    version = serializers.IntegerField()
    policy_version = serializers.IntegerField()
    uses = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Per column, how the query uses it (dimension, measure, filter, join_key).",
    )
    epsilon = serializers.CharField(help_text="The ε this query charges the dataset.")
    delta = serializers.CharField()
    total_epsilon = serializers.CharField()
    remaining_epsilon = serializers.CharField()
    remaining_delta = serializers.CharField()
    max_epsilon_per_query = serializers.CharField()
    rows_per_unit = serializers.IntegerField()
    min_group_size = serializers.IntegerField()
    fits = serializers.BooleanField(help_text="Whether the charge fits the dataset's budget.")


class PlanDecisionSerializer(serializers.Serializer):
    """The residency function's answer for one step and one dataset."""

    kind = serializers.CharField()
    allowed = serializers.BooleanField()
    reason = serializers.CharField()


class PlanStepSerializer(serializers.Serializer):
    step = serializers.CharField()
    kind = serializers.CharField()
    site = serializers.CharField(allow_null=True, help_text="Null for a delivery.")
    jurisdiction = serializers.CharField(allow_null=True)
    decisions = PlanDecisionSerializer(many=True)


class PlanCellSerializer(serializers.Serializer):
    """An output cell's noise: its mechanism, the ε it spends and its 95 % accuracy."""

    alias = serializers.CharField()
    kind = serializers.CharField(help_text="count, sum or avg")
    mechanism = serializers.CharField()
    epsilon = serializers.FloatField()
    scale = serializers.FloatField(allow_null=True)
    accuracy95 = serializers.FloatField(
        help_text="Half-width of the 95 % interval (for an average, a bound at the minimum group)."
    )


class PlanReportSerializer(serializers.Serializer):
    """The planner's report for a query text and its parameters (`jobs/planner.py`)."""

    ok = serializers.BooleanField(help_text="Every check passed.")
    error = serializers.JSONField(
        allow_null=True, help_text="Where the parser refused the SQL: reason, line, column."
    )
    shape = serializers.CharField(allow_null=True)
    output_kind = serializers.CharField()
    synthetic = serializers.JSONField(allow_null=True, help_text="A synthetic extract's plan.")
    mechanism = PlanMechanismSerializer()
    datasets = PlanDatasetSerializer(many=True)
    required_approvers = serializers.ListField(child=serializers.SlugField())
    steps = PlanStepSerializer(many=True)
    groups = serializers.JSONField()
    cells = PlanCellSerializer(many=True)
    checks = PlanCheckSerializer(many=True)


class ResultTableSerializer(serializers.Serializer):
    """The released table: per row its dimensions' values, `suppressed`, and per aggregate alias
    a cell {value, mechanism, scale, ci95_low, ci95_high, approximate} (null values where the
    group is suppressed)."""

    columns = serializers.ListField(child=serializers.CharField())
    dimensions = serializers.ListField(child=serializers.CharField())
    rows = serializers.ListField(child=serializers.DictField())
    measurements = serializers.ListField(child=serializers.DictField())
    rows_per_unit = serializers.IntegerField()
    min_group_size = serializers.IntegerField()
    confidence = serializers.FloatField()


class ResultFileSerializer(serializers.Serializer):
    name = serializers.CharField()
    commitment = serializers.CharField()
    size = serializers.IntegerField()
    url = serializers.CharField()


class JobResultSerializer(serializers.Serializer):
    """A released result: an aggregate's `table`, or a synthetic extract's summary and files."""

    job = serializers.IntegerField()
    commitment = serializers.CharField()
    opening = serializers.JSONField(help_text="Opens the commitment (verify.pyz --result).")
    mechanism = serializers.CharField()
    epsilon = serializers.CharField()
    simulated_tee = serializers.BooleanField()
    table = ResultTableSerializer(required=False, help_text="An aggregate query's result.")
    output_kind = serializers.CharField(required=False, help_text="`synthetic` for an extract.")
    differentially_private = serializers.BooleanField(required=False)
    # The response's key; DRF takes declared fields out of the class, so no Field.label clash.
    label = serializers.CharField(required=False, allow_null=True)  # type: ignore[assignment]
    delta = serializers.CharField(required=False)
    extract = serializers.JSONField(required=False, help_text="The extract's summary.")
    files = ResultFileSerializer(many=True, required=False)
