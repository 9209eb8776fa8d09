"""API shapes for parties and datasets: explicit fields, inputs apart from outputs, never rows."""

from __future__ import annotations

import base64
import json

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from parties.credentials import CredentialRefused, machine_public_key
from parties.models import (
    AnalysisPolicy,
    ApprovalCredential,
    Column,
    Dataset,
    DatasetVersion,
    Jurisdiction,
    Organization,
    Site,
)
from parties.services import POLICY_FIELDS


class OrganizationSerializer(serializers.ModelSerializer):
    """`id` is the organisation's number in what its credentials sign (`org:<id>` in the
    approval message) and in the audit log."""

    class Meta:
        model = Organization
        fields = ["id", "slug", "name"]


class JurisdictionSerializer(serializers.ModelSerializer):
    raw_processing_in = serializers.SlugRelatedField[Jurisdiction](
        many=True, read_only=True, slug_field="code"
    )
    shares_may_go_to = serializers.SlugRelatedField[Jurisdiction](
        many=True, read_only=True, slug_field="code"
    )
    outputs_may_go_to = serializers.SlugRelatedField[Jurisdiction](
        many=True, read_only=True, slug_field="code"
    )

    class Meta:
        model = Jurisdiction
        fields = [
            "code",
            "name",
            "legal_framework",
            "raw_processing_in",
            "shares_may_go_to",
            "outputs_may_go_to",
        ]


class SiteSerializer(serializers.ModelSerializer):
    jurisdiction = serializers.SlugRelatedField[Jurisdiction](read_only=True, slug_field="code")

    class Meta:
        model = Site
        fields = ["name", "jurisdiction", "kind", "queue", "description", "active"]


class ColumnSerializer(serializers.ModelSerializer):
    class Meta:
        model = Column
        fields = ["name", "type", "role", "domain", "lower", "upper"]


class DatasetVersionSerializer(serializers.ModelSerializer):
    columns = ColumnSerializer(many=True, read_only=True)

    class Meta:
        model = DatasetVersion
        fields = [
            "number",
            "source_format",
            "content_sha256",
            "ciphertext_sha256",
            "row_count",
            "stored_bytes",
            "created_at",
            "columns",
        ]


class PolicySerializer(serializers.ModelSerializer):
    allowed_receivers = serializers.SlugRelatedField[Organization](
        many=True, read_only=True, slug_field="slug"
    )

    class Meta:
        model = AnalysisPolicy
        fields = ["version", *POLICY_FIELDS, "allowed_receivers", "created_at"]


class DatasetSerializer(serializers.ModelSerializer):
    organization = serializers.SlugRelatedField[Organization](read_only=True, slug_field="slug")
    jurisdiction = serializers.SlugRelatedField[Jurisdiction](read_only=True, slug_field="code")
    qualified_name = serializers.CharField(read_only=True)
    latest_version = serializers.SerializerMethodField()

    class Meta:
        model = Dataset
        fields = [
            "qualified_name",
            "organization",
            "slug",
            "name",
            "description",
            "jurisdiction",
            "created_at",
            "suspended_at",
            "latest_version",
        ]

    @extend_schema_field(DatasetVersionSerializer(allow_null=True))
    def get_latest_version(self, dataset: Dataset) -> dict | None:
        version = dataset.versions.order_by("-number").first()
        return DatasetVersionSerializer(version).data if version else None


class ColumnSpecSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    type = serializers.ChoiceField(choices=Column.Type.choices)
    role = serializers.ChoiceField(choices=Column.Role.choices)
    domain = serializers.ListField(child=serializers.JSONField(), required=False, default=list)
    lower = serializers.DecimalField(
        max_digits=30, decimal_places=10, required=False, allow_null=True, default=None
    )
    upper = serializers.DecimalField(
        max_digits=30, decimal_places=10, required=False, allow_null=True, default=None
    )


class InferredSchemaSerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=DatasetVersion.Format.choices)
    schema = ColumnSpecSerializer(many=True, help_text="A suggestion, for the owner to confirm.")


class SchemaField(serializers.JSONField):
    """The schema as JSON; multipart forms send it as a string."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError:
                raise serializers.ValidationError("The schema is not valid JSON.") from None
        specs = ColumnSpecSerializer(data=data, many=True)
        specs.is_valid(raise_exception=True)
        return [dict(item) for item in specs.validated_data]


class FileInputSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="CSV (UTF-8, header row) or Parquet. Streamed; refused over the size limit."
    )


class DatasetVersionInputSerializer(FileInputSerializer):
    schema = SchemaField(help_text="A list of columns: name, type, role, domain, lower, upper.")


class DatasetInputSerializer(DatasetVersionInputSerializer):
    organization = serializers.SlugField()
    slug = serializers.SlugField(max_length=50)
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    jurisdiction = serializers.CharField(max_length=8)


class PolicyInputSerializer(serializers.ModelSerializer):
    """Every policy setting (services.POLICY_FIELDS), each optional: a PUT changes what it
    names. Declared here where the API's rules are stricter than the model field's."""

    allowed_join_keys = serializers.ListField(child=serializers.CharField(), required=False)
    allowed_dimensions = serializers.ListField(child=serializers.CharField(), required=False)
    allowed_measures = serializers.ListField(child=serializers.CharField(), required=False)
    allowed_filters = serializers.ListField(child=serializers.CharField(), required=False)
    allowed_aggregates = serializers.ListField(
        child=serializers.ChoiceField(choices=AnalysisPolicy.Aggregate.choices), required=False
    )
    allowed_mechanisms = serializers.ListField(
        child=serializers.ChoiceField(choices=AnalysisPolicy.Mechanism.choices), required=False
    )
    allowed_receivers = serializers.SlugRelatedField(
        many=True, slug_field="slug", queryset=Organization.objects.all(), required=False
    )
    min_group_size = serializers.IntegerField(min_value=1, required=False)
    max_rows_per_unit = serializers.IntegerField(
        min_value=1,
        required=False,
        help_text="L, the contribution bound: at most this many rows per privacy unit enter "
        "any aggregate.",
    )
    max_epsilon_per_query = serializers.DecimalField(
        max_digits=8, decimal_places=4, min_value=0, required=False
    )
    total_epsilon = serializers.DecimalField(
        max_digits=8, decimal_places=4, min_value=0, required=False
    )
    total_delta = serializers.DecimalField(
        max_digits=13, decimal_places=12, min_value=0, required=False
    )

    class Meta:
        model = AnalysisPolicy
        fields = [*POLICY_FIELDS, "allowed_receivers"]
        extra_kwargs = {name: {"required": False} for name in POLICY_FIELDS}


class ApprovalCredentialSerializer(serializers.ModelSerializer):
    """A credential an organisation's owners approve with: never a private key."""

    organization = serializers.SlugRelatedField[Organization](read_only=True, slug_field="slug")
    holder = serializers.SerializerMethodField()
    credential_id = serializers.SerializerMethodField()
    public_key = serializers.SerializerMethodField()

    class Meta:
        model = ApprovalCredential
        fields = [
            "id",
            "organization",
            "kind",
            "name",
            "holder",
            "credential_id",
            "public_key",
            "rp_id",
            "created_at",
            "last_used_at",
            "removed_at",
        ]

    def get_holder(self, credential: ApprovalCredential) -> str:
        return credential.user.username if credential.user else ""

    def get_credential_id(self, credential: ApprovalCredential) -> str:
        return base64.b64encode(bytes(credential.credential_id)).decode()

    def get_public_key(self, credential: ApprovalCredential) -> str:
        return base64.b64encode(bytes(credential.public_key)).decode()


class MachineKeyInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    public_key = serializers.CharField(help_text="The raw 32-byte Ed25519 public key, base64.")

    def validate_public_key(self, value: str) -> bytes:
        try:
            return machine_public_key(value)
        except CredentialRefused as exc:
            raise serializers.ValidationError(str(exc)) from None
