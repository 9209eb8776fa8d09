"""What the decision form hands the browser's passkey prompt: each decision's challenge (derived
from its approval message), the relying party and the member's own passkeys for that
organisation."""

from __future__ import annotations

import base64
import json

from django import template
from django.conf import settings

from jobs.queries.canonical import approval_challenge
from parties.selectors import passkeys_of

register = template.Library()


@register.simple_tag
def passkey_challenges(query, organization, user) -> dict[str, str]:
    ids = (
        passkeys_of(user).filter(organization=organization).values_list("credential_id", flat=True)
    )
    return {
        "approve": approval_challenge(query, organization, "approve"),
        "reject": approval_challenge(query, organization, "reject"),
        "rp_id": settings.WEBAUTHN_RP_ID,
        "credentials": json.dumps(
            [base64.urlsafe_b64encode(bytes(i)).rstrip(b"=").decode() for i in ids]
        ),
        "registered": bool(ids),
    }
