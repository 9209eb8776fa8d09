"""The forms of the room pages: a new room, an invitation, a contribution."""

from django import forms

from parties.models import Dataset, Organization


class RoomForm(forms.Form):
    organization = forms.ModelChoiceField(
        queryset=Organization.objects.none(),
        empty_label=None,
        help_text="The organisation that creates the room.",
    )
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(max_length=60, help_text="Used in links and the API.")
    purpose = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        help_text="What the collaboration is for; every member sees it.",
    )

    def __init__(self, *args, organizations=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["organization"].queryset = Organization.objects.filter(
            pk__in=[org.pk for org in organizations]
        )


class InviteForm(forms.Form):
    organization = forms.ModelChoiceField(
        queryset=Organization.objects.none(),
        empty_label="Choose an organisation",
        label="Invite an organisation",
    )

    def __init__(self, *args, room=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["organization"].queryset = Organization.objects.exclude(
            room_memberships__room=room, room_memberships__status__in=["active", "invited"]
        )


class ContributeForm(forms.Form):
    dataset = forms.ModelChoiceField(
        queryset=Dataset.objects.none(),
        empty_label="Choose a dataset",
        label="Contribute a dataset",
    )

    def __init__(self, *args, datasets=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset"].queryset = (
            datasets if datasets is not None else Dataset.objects.none()
        )
