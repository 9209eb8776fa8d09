from __future__ import annotations

from django import forms
from django.conf import settings


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="What uses it, e.g. the script or machine: you will see it listed.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        limit = settings.TOKEN_LIFETIME_DAYS
        self.fields["expires_in_days"] = forms.IntegerField(
            label="Expires in (days)",
            min_value=1,
            max_value=limit,
            initial=limit,
            help_text=f"At most {limit}; create a new token when it expires.",
        )
