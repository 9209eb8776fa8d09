"""Forms of the dataset pages. The schema confirmation arrives as `col-<i>-<field>` inputs."""

from __future__ import annotations

from typing import Any

from django import forms
from django.http import QueryDict

from parties.models import AnalysisPolicy, Column, Jurisdiction, Organization
from parties.services import POLICY_FIELDS


class DatasetForm(forms.Form):
    organization = forms.ModelChoiceField(queryset=Organization.objects.none(), empty_label=None)
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(
        max_length=50, help_text="Short name used in queries, e.g. <code>patients</code>."
    )
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    # No silent first option: the organisation's home when it has one, else a choice to make.
    jurisdiction = forms.ModelChoiceField(
        queryset=Jurisdiction.objects.all(),
        to_field_name="code",
        empty_label="Choose where the data is stored",
        help_text="The data is stored, encrypted, in this jurisdiction; rows never leave it.",
    )
    # Not required by the form: a file kept from a refused attempt stands in (the view checks).
    file = forms.FileField(required=False, help_text="CSV with a header row, or Parquet.")

    def __init__(self, *args, organizations=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["organization"].queryset = Organization.objects.filter(
            pk__in=[org.pk for org in organizations]
        )
        homes = {org.jurisdiction.code for org in organizations if org.jurisdiction_id}
        if len(homes) == 1:
            self.fields["jurisdiction"].initial = homes.pop()


class VersionForm(forms.Form):
    file = forms.FileField(required=False, help_text="CSV with a header row, or Parquet.")


def schema_from_post(data: QueryDict) -> list[dict[str, Any]] | None:
    """The confirmed schema, or None when the page has not shown one yet."""
    try:
        count = int(data.get("columns", ""))
    except ValueError:
        return None
    schema = []
    for i in range(count):

        def field(name: str, i: int = i) -> str:
            return data.get(f"col-{i}-{name}", "").strip()

        lines = [line.strip() for line in field("domain").splitlines() if line.strip()]
        domain: list[str | int] = (
            [int(v) if v.lstrip("-").isdigit() else v for v in lines]
            if field("type") == Column.Type.INTEGER
            else list(lines)
        )
        schema.append(
            {
                "name": field("name"),
                "type": field("type"),
                "role": field("role"),
                "domain": domain,
                "lower": field("lower") or None,
                "upper": field("upper") or None,
            }
        )
    return schema


def _column_choices(columns, roles) -> list[tuple[str, str]]:
    return [(c.name, c.name) for c in columns if c.role in roles]


class PolicyForm(forms.ModelForm):
    """Every policy setting (services.POLICY_FIELDS, the one list of them), as model fields
    unless declared here; the service checks the whole and writes the new version."""

    allowed_join_keys = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple
    )
    allowed_dimensions = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple
    )
    allowed_measures = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple
    )
    allowed_filters = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple)
    allowed_aggregates = forms.MultipleChoiceField(
        choices=AnalysisPolicy.Aggregate.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    allowed_mechanisms = forms.MultipleChoiceField(
        choices=AnalysisPolicy.Mechanism.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    allowed_receivers = forms.ModelMultipleChoiceField(
        queryset=Organization.objects.all(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Organisations that may receive results computed from this dataset.",
    )
    min_group_size = forms.IntegerField(min_value=1)
    max_rows_per_unit = forms.IntegerField(
        label="Rows per privacy unit (L)",
        min_value=1,
        help_text="The contribution bound: at most this many rows of one privacy unit (say, "
        "one patient's stays) enter any aggregate, the rest are left out. Noise grows with it "
        "(a count's sensitivity is L), so set it to what most units have.",
    )
    max_epsilon_per_query = forms.DecimalField(min_value=0, max_digits=8, decimal_places=4)
    total_epsilon = forms.DecimalField(min_value=0, max_digits=8, decimal_places=4)
    total_delta = forms.DecimalField(min_value=0, max_digits=13, decimal_places=12)
    synthetic_allowed = forms.BooleanField(
        label="Synthetic extracts allowed",
        required=False,
        help_text="Rows from a model fitted in the TEE; the default method is differentially "
        "private and charged to the budget like any query.",
    )
    non_dp_synthetic_allowed = forms.BooleanField(
        label="Non-DP synthetic extracts allowed",
        required=False,
        help_text="Also allow SDV's synthesizers, which carry no formal privacy guarantee.",
    )
    max_synthetic_rows = forms.IntegerField(
        label="Largest synthetic extract (rows)", min_value=1, initial=100_000
    )

    class Meta:
        model = AnalysisPolicy
        fields = [*POLICY_FIELDS, "allowed_receivers"]

    def __init__(self, *args, columns=(), **kwargs):
        super().__init__(*args, **kwargs)
        role = Column.Role
        self.fields["allowed_join_keys"].choices = _column_choices(
            columns, {role.JOIN_KEY, role.UNIT}
        )
        self.fields["allowed_dimensions"].choices = _column_choices(columns, {role.DIMENSION})
        self.fields["allowed_measures"].choices = _column_choices(columns, {role.MEASURE})
        self.fields["allowed_filters"].choices = _column_choices(
            columns, {role.DIMENSION, role.MEASURE, role.OTHER}
        )

    @staticmethod
    def initial_from(policy: AnalysisPolicy) -> dict[str, Any]:
        initial = {name: getattr(policy, name) for name in POLICY_FIELDS}
        initial["allowed_receivers"] = list(policy.allowed_receivers.all())
        return initial


class MachineKeyForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="What approves with it, e.g. the pipeline or service."
    )
    public_key = forms.CharField(
        label="Public key",
        max_length=100,
        help_text=(
            "The raw Ed25519 public key, base64, as <code>python -m keyservice.approve new-key "
            "FILE</code> prints it. The private key stays with your organisation."
        ),
    )
