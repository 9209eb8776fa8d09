"""The owners' key services, as the TEE host reaches them: each organisation's own service at
the address it published (KEY_SERVICES), over its signed API; or, in the embedded default,
the same decision run in this process over the platform's local key folder, with what the
organisation would pin taken from the platform's records (refused in production by
`check --deploy`: the host would then hold the keys it relays)."""

from __future__ import annotations

from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cleanroom.crypto.keys import key_service
from jobs.engines.tee import trust
from keyservice.client import RemoteKeyService
from keyservice.release import Dataset, Pinned, Released, ReleaseLog, ReleaseRequest
from keyservice.service import OrganizationKeyService
from parties.models import Organization, Site


class KeyReleaser(Protocol):
    def release(self, request: ReleaseRequest) -> Released: ...


def embedded_pinned(organization: Organization, config: trust.TeeConfig) -> Pinned:
    """What the organisation's key service would pin, from the platform's records."""
    datasets = organization.datasets.select_related("jurisdiction", "organization")
    return Pinned(
        organization=organization.pk,
        approval_keys=(bytes(organization.public_key),),
        datasets={
            d.pk: Dataset(id=d.pk, name=d.qualified_name, rules=d.jurisdiction.rules())
            for d in datasets
        },
        sites={
            site.name: site.place()
            for site in Site.objects.filter(kind=Site.Kind.TEE).select_related("jurisdiction")
        },
        trusted_roots=tuple(trust.trusted_roots(config)),
        allowed_measurements=tuple(trust.allowed_measurements(config)),
    )


def owner_key_service(organization: Organization, config: trust.TeeConfig) -> KeyReleaser:
    url = config.key_services.get(organization.slug)
    if url:
        key = Ed25519PrivateKey.from_private_bytes(config.caller_key.read_bytes())
        return RemoteKeyService(url, config.caller, key)
    return OrganizationKeyService(
        embedded_pinned(organization, config),
        key_service(),
        ReleaseLog(config.release_log_dir / f"org-{organization.pk}.jsonl"),
    )
