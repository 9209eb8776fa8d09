"""Each owner organisation's key service, as the platform reaches it: the organisation's own
service at the address named in KEY_SERVICES, over its signed API; or, in the embedded default,
the same service object run in this process over the platform's key folder, with what the
organisation would pin taken from the platform's records (refused in production by
`check --deploy`: whoever runs the process would hold the keys)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cleanroom.crypto.keys import key_service
from keyservice.client import RemoteKeyService
from keyservice.release import Dataset, Pinned, ReleaseLog
from keyservice.service import OrganizationKeyService
from parties.models import Organization, Site
from parties.selectors import pinned_approvers


@dataclass(frozen=True)
class KeyServiceAccess:
    """Where each organisation's key service is, and how this process signs its requests."""

    urls: Mapping[str, str] = field(default_factory=dict)  # by organisation slug
    caller: str = "platform"
    caller_key: Path = Path()  # raw Ed25519 private key
    release_log_dir: Path = Path()  # the embedded services' release logs

    @classmethod
    def from_settings(cls, settings: Any) -> KeyServiceAccess:
        return cls(
            urls=dict(settings.KEY_SERVICES),
            caller=settings.KEY_SERVICE_CALLER,
            caller_key=Path(settings.KEY_SERVICE_CALLER_KEY),
            # A site process has no key folder, and so no embedded key service's log.
            release_log_dir=Path(settings.KEY_SERVICE_ROOT or ".") / "releases",
        )


def embedded_pinned(
    organization: Organization,
    trusted_roots: Sequence[x509.Certificate] = (),
    allowed_measurements: Sequence[Mapping[int, bytes]] = (),
) -> Pinned:
    """What the organisation's key service would pin, from the platform's records."""
    datasets = organization.datasets.select_related("jurisdiction", "organization")
    return Pinned(
        organization=organization.pk,
        approvers=pinned_approvers(organization),
        datasets={
            d.pk: Dataset(id=d.pk, name=d.qualified_name, rules=d.jurisdiction.rules())
            for d in datasets
        },
        sites={
            site.name: site.place()
            for site in Site.objects.exclude(kind=Site.Kind.MPC_PARTY).select_related(
                "jurisdiction"
            )
        },
        trusted_roots=tuple(trusted_roots),
        allowed_measurements=tuple(allowed_measurements),
        suspended=frozenset(d.pk for d in datasets if d.suspended_at),
        # The rooms the organisation suspended its participation in (its room memberships).
        suspended_rooms=frozenset(
            organization.room_memberships.filter(suspended_at__isnull=False).values_list(
                "room_id", flat=True
            )
        ),
    )


OwnerKeyService = OrganizationKeyService | RemoteKeyService


def remote_key_service(url: str, access: KeyServiceAccess) -> RemoteKeyService:
    """An organisation's own key service at `url`, asked as this process's caller."""
    key = Ed25519PrivateKey.from_private_bytes(access.caller_key.read_bytes())
    return RemoteKeyService(url, access.caller, key)


def owner_key_service(
    organization: Organization,
    access: KeyServiceAccess,
    *,
    trusted_roots: Sequence[x509.Certificate] = (),
    allowed_measurements: Sequence[Mapping[int, bytes]] = (),
) -> OwnerKeyService:
    url = access.urls.get(organization.slug)
    if url:
        return remote_key_service(url, access)
    return OrganizationKeyService(
        embedded_pinned(organization, trusted_roots, allowed_measurements),
        key_service(),
        ReleaseLog(access.release_log_dir / f"org-{organization.pk}.jsonl"),
    )


def ordered_key_service(
    owner: str,
    url: str,
    access: KeyServiceAccess,
    *,
    trusted_roots: Sequence[x509.Certificate] = (),
    allowed_measurements: Sequence[Mapping[int, bytes]] = (),
) -> OwnerKeyService:
    """The key service a work order names for `owner`: its own at `url`; with none, the
    embedded one, in this process over the platform's key folder and records, which only the
    control plane's own processes have (a site process's database refuses it)."""
    if url:
        return remote_key_service(url, access)
    return owner_key_service(
        Organization.objects.get(slug=owner),
        access,
        trusted_roots=trusted_roots,
        allowed_measurements=allowed_measurements,
    )
