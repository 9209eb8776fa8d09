"""The API's shapes for queries, their plans, approvals and the inbox."""

from decimal import Decimal

from rest_framework import serializers

from jobs.models import (
    Approval,
    Query,
    Room,
)
from jobs.queries.canonical import verify_approval
from parties.models import Organization


class ApprovalSerializer(serializers.ModelSerializer):
    organization = serializers.SlugRelatedField[Organization](read_only=True, slug_field="slug")
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
    room = serializers.SlugRelatedField[Room](read_only=True, slug_field="slug")
    author_organization = serializers.SlugRelatedField[Organization](
        read_only=True, slug_field="slug"
    )
    receivers = serializers.SlugRelatedField[Organization](
        many=True, read_only=True, slug_field="slug"
    )
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
    delta = serializers.DecimalField(max_digits=13, decimal_places=12, default=Decimal(0))
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
    delta = serializers.DecimalField(max_digits=13, decimal_places=12, default=Decimal(0))
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
    """The planner's report for a query text and its parameters (`jobs/planning/planner.py`)."""

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
