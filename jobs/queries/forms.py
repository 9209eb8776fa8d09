"""The forms of the query pages: the composer and an owner's decision."""

from datetime import timedelta
from decimal import Decimal

from django import forms
from django.utils import timezone

from jobs.models import Query
from parties.models import Organization


def _default_expiry():
    return (timezone.now() + timedelta(days=14)).replace(second=0, microsecond=0)


class QueryForm(forms.Form):
    title = forms.CharField(max_length=200)
    purpose = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why the result is needed. Every owner reads it before deciding.",
    )
    sql = forms.CharField(
        label="Query",
        widget=forms.Textarea(attrs={"rows": 7, "spellcheck": "false", "class": "mono"}),
        help_text="SELECT dimensions and COUNT(*), SUM or AVG FROM org.dataset … GROUP BY …; "
        "for a synthetic extract, SELECT the columns FROM org.dataset … [WHERE …]",
    )
    output_kind = forms.ChoiceField(
        label="Output", choices=Query.OutputKind.choices, initial=Query.OutputKind.AGGREGATE
    )
    synthetic_method = forms.ChoiceField(
        label="Synthesis method",
        choices=Query.SyntheticMethod.choices,
        initial=Query.SyntheticMethod.DP_MARGINALS,
        required=False,
        help_text="Synthetic extracts only. The DP method is charged ε and δ; SDV's are not "
        "differentially private and need every owner's explicit permission.",
    )
    synthetic_rows = forms.IntegerField(
        label="Synthetic rows", min_value=1, initial=1000, required=False
    )
    requested_mechanism = forms.ChoiceField(
        label="Mechanism", choices=Query.Mechanism.choices, initial=Query.Mechanism.AUTO
    )
    epsilon = forms.DecimalField(
        label="ε (epsilon)",
        min_value=Decimal("0.0001"),
        max_digits=8,
        decimal_places=4,
        initial=Decimal("0.5"),
    )
    delta = forms.DecimalField(
        label="δ (delta)", min_value=0, max_digits=13, decimal_places=12, initial=0, required=False
    )
    receivers = forms.ModelMultipleChoiceField(
        queryset=Organization.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        help_text="Organisations that may read the result.",
    )
    expires_at = forms.DateTimeField(
        label="Approvals expire",
        initial=_default_expiry,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )

    def __init__(self, *args, room=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["receivers"].queryset = Organization.objects.filter(
            room_memberships__room=room, room_memberships__status="active"
        )

    def clean_delta(self):
        return self.cleaned_data.get("delta") or Decimal(0)

    def clean(self):
        data = super().clean()
        if data.get("output_kind") == Query.OutputKind.SYNTHETIC:
            data["synthetic_method"] = (
                data.get("synthetic_method") or Query.SyntheticMethod.DP_MARGINALS
            )
        else:  # the extract's fields mean nothing for aggregates
            data["synthetic_method"], data["synthetic_rows"] = "", None
        return data

    def query_values(self) -> dict:
        data = dict(self.cleaned_data)
        data.pop("receivers")
        return data


class DecisionForm(forms.Form):
    comment = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
