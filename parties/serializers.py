"""API shapes for parties and datasets: explicit fields, inputs apart from outputs, never rows."""

from __future__ import annotations

import json

from rest_framework import serializers

from parties.models import (
    AnalysisPolicy,
    Column,
    Dataset,
    DatasetVersion,
    Jurisdiction,
    Organization,
    Site,
)


class OrganizationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Organization
        fields = ["slug", "name"]


class JurisdictionSerializer(serializers.ModelSerializer):
    raw_processing_in = serializers.SlugRelatedField(many=True, read_only=True, slug_field="code")
    shares_may_go_to = serializers.SlugRelatedField(many=True, read_only=True, slug_field="code")
    outputs_may_go_to = serializers.SlugRelatedField(many=True, read_only=True, slug_field="code")

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
    jurisdiction = serializers.SlugRelatedField(read_only=True, slug_field="code")

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
    allowed_receivers = serializers.SlugRelatedField(many=True, read_only=True, slug_field="slug")

    class Meta:
        model = AnalysisPolicy
        fields = [
            "version",
            "allowed_join_keys",
            "allowed_dimensions",
            "allowed_measures",
            "allowed_filters",
            "allowed_aggregates",
            "allowed_mechanisms",
            "allowed_receivers",
            "min_group_size",
            "max_epsilon_per_query",
            "total_epsilon",
            "total_delta",
            "synthetic_allowed",
            "non_dp_synthetic_allowed",
            "max_synthetic_rows",
            "created_at",
        ]


class DatasetSerializer(serializers.ModelSerializer):
    organization = serializers.SlugRelatedField(read_only=True, slug_field="slug")
    jurisdiction = serializers.SlugRelatedField(read_only=True, slug_field="code")
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
            "latest_version",
        ]

    def get_latest_version(self, dataset: Dataset) -> DatasetVersionSerializer:
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


class PolicyInputSerializer(serializers.Serializer):
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
    max_epsilon_per_query = serializers.DecimalField(
        max_digits=8, decimal_places=4, min_value=0, required=False
    )
    total_epsilon = serializers.DecimalField(
        max_digits=8, decimal_places=4, min_value=0, required=False
    )
    total_delta = serializers.DecimalField(
        max_digits=13, decimal_places=12, min_value=0, required=False
    )
    synthetic_allowed = serializers.BooleanField(required=False)
    non_dp_synthetic_allowed = serializers.BooleanField(required=False)
    max_synthetic_rows = serializers.IntegerField(min_value=1, required=False)
