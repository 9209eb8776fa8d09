"""The API's shapes for jobs, their steps, and a room's budget."""

from rest_framework import serializers

from jobs.models import (
    Job,
    JobStep,
    Query,
    Result,
)
from parties.models import Site


class JobStepSerializer(serializers.ModelSerializer):
    """An MPC job's step and the site it runs at (none for the delivery)."""

    site = serializers.SlugRelatedField[Site](read_only=True, slug_field="name", allow_null=True)
    jurisdiction = serializers.CharField(
        source="site.jurisdiction.code", default=None, allow_null=True
    )

    class Meta:
        model = JobStep
        fields = ["name", "kind", "site", "jurisdiction", "party", "state", "attempt", "error"]


class JobSerializer(serializers.ModelSerializer):
    query = serializers.PrimaryKeyRelatedField[Query](read_only=True)
    # None for an MPC job: its steps run at their own sites.
    site = serializers.SlugRelatedField[Site](read_only=True, slug_field="name", allow_null=True)
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
