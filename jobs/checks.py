"""System checks of the jobs app: production settings must not trust the simulated TEE."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, register

from cleanroom.attestation.trust import parse_measurements
from cleanroom.attestation.verify import SIMULATED_ROOT_CN


@register(Tags.security, deploy=True)
def simulated_tee_refused_in_production(app_configs=None, **kwargs) -> list[Error]:
    if not getattr(settings, "TEE_ALLOW_SIMULATED", False):
        return []
    return [
        Error(
            f"TEE_ALLOW_SIMULATED is true: this deployment trusts its simulated TEE root "
            f"({SIMULATED_ROOT_CN!r}). A simulated TEE is not hardware backed, anyone with its "
            "key file can forge attestations, and production must not trust it.",
            hint="Set TEE_ALLOW_SIMULATED=false; only the AWS Nitro root is then trusted.",
            id="cleanroom.E001",
        )
    ]


@register(Tags.security)
def measurement_allowlist_is_well_formed(app_configs=None, **kwargs) -> list[Error]:
    try:
        parse_measurements(getattr(settings, "TEE_MEASUREMENT_ALLOWLIST", None) or [])
    except (ValueError, TypeError) as exc:
        return [
            Error(
                f"TEE_MEASUREMENT_ALLOWLIST cannot be read: {exc}",
                hint="Each entry is a PCR0 hex value (96 hex digits) or PCR0=<hex>+PCR1=<hex>.",
                id="cleanroom.E002",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def owners_run_their_key_services(app_configs=None, **kwargs) -> list[Error]:
    if getattr(settings, "KEY_SERVICES", None):
        return []
    return [
        Error(
            "KEY_SERVICES names no organisation's key service: every key release would be "
            "decided by the embedded key service, in the TEE host's own process, over the "
            "platform's key folder, so the host would hold the keys it only relays.",
            hint="Each owner runs `python -m keyservice serve` (deploy/README.md) and the "
            "platform names it: CLEANROOM_KEY_SERVICES=<slug>=https://...",
            id="cleanroom.E003",
        )
    ]
