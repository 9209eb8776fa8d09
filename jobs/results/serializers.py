"""The API's shapes for a released result and the files of a synthetic extract."""

from rest_framework import serializers


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
