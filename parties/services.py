"""Changes to parties, datasets and policies. Each writes its audit event in its transaction."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest

from cleanroom.audit.log import record_platform_event
from cleanroom.crypto.envelope import new_data_key
from cleanroom.errors import DomainError
from parties.ingest import ColumnSpec, IngestError, StoredFile, parse_specs, store_encrypted
from parties.keys import KeyServiceAccess, owner_key_service
from parties.models import (
    AnalysisPolicy,
    Column,
    Dataset,
    DatasetVersion,
    Jurisdiction,
    Membership,
    Organization,
    identifier,
)
from parties.permissions import Permission, require
from parties.storage import DatasetStorage, StorageRefused, dataset_storage

logger = logging.getLogger(__name__)


@transaction.atomic
def create_organization(
    *, slug: str, name: str, jurisdiction: str, by: User | None = None
) -> Organization:
    _check_identifier(slug)
    # No approval key here: the owners approve with their own credentials (parties/credentials).
    organization = Organization.objects.create(
        slug=slug,
        name=name,
        jurisdiction=_jurisdiction(jurisdiction),
    )
    record_platform_event(
        "organization.created",
        by=by,
        subject=f"org:{organization.pk}",
        jurisdiction=organization.jurisdiction.code,
    )
    return organization


@transaction.atomic
def add_membership(
    *, organization: Organization, user: User, role: str, by: User | None = None
) -> Membership:
    membership, created = Membership.objects.get_or_create(
        organization=organization, user=user, role=role
    )
    if created:
        record_platform_event(
            "membership.added",
            by=by,
            subject=f"org:{organization.pk}",
            user=f"user:{user.pk}",
            role=role,
        )
    return membership


def _check_identifier(slug: str) -> None:
    try:
        identifier(slug)
    except ValidationError as exc:
        raise DomainError(f"{slug!r}: {exc.messages[0]}", code="invalid_name") from None


def _jurisdiction(code: str) -> Jurisdiction:
    try:
        return Jurisdiction.objects.get(code=code.upper())
    except Jurisdiction.DoesNotExist:
        known = ", ".join(Jurisdiction.objects.values_list("code", flat=True))
        raise IngestError(f"Unknown jurisdiction {code!r}; choose one of {known}.") from None


@dataclass
class _EncryptedUpload:
    stored: StoredFile
    relative: str
    storage: DatasetStorage
    data_key: bytes


def _encrypt_upload(
    *,
    organization: Organization,
    dataset_slug: str,
    jurisdiction: Jurisdiction,
    upload: Path,
    filename: str,
    specs: list[ColumnSpec],
) -> _EncryptedUpload:
    """Validate and encrypt the file into its jurisdiction's storage, before any transaction
    opens: a large upload must not hold the database's write lock while it streams."""
    relative = f"{organization.slug}/{dataset_slug}/{secrets.token_hex(12)}.parquet.enc"
    storage = dataset_storage(jurisdiction.code)
    data_key = new_data_key()
    stored = storage.store(
        relative,
        lambda destination: store_encrypted(
            upload, filename=filename, specs=specs, data_key=data_key, destination=destination
        ),
    )
    return _EncryptedUpload(stored, relative, storage, data_key)


@contextmanager
def _removed_on_failure(encrypted: _EncryptedUpload) -> Iterator[None]:
    try:
        yield
    except BaseException:
        try:
            encrypted.storage.remove(encrypted.relative)
        except StorageRefused as exc:
            # Left behind, the file is noise: its data key was never kept. Said in the log; the
            # upload's own failure is what the caller hears.
            logger.warning("a failed upload's file stays stored: %s", exc)
        raise


def _check_key_custody(organization: Organization) -> None:
    """Where owners run their own key services, one that runs none gets no upload: its data key
    would be wrapped by the embedded service under the platform's own key folder, and released
    on the platform's own records of its owners' credentials, which the operator can write."""
    if settings.KEY_SERVICES and organization.slug not in settings.KEY_SERVICES:
        raise IngestError(
            f"{organization.name} runs no key service of its own here: its datasets' keys "
            "would be the platform's. Run one (python -m keyservice) and have the platform "
            "name it, then upload.",
            code="no_key_service",
        )


def _record_version(
    *, dataset: Dataset, number: int, encrypted: _EncryptedUpload, specs: list[ColumnSpec], by: User
) -> DatasetVersion:
    organization = dataset.organization
    stored = encrypted.stored
    version = DatasetVersion(
        dataset=dataset,
        number=number,
        source_format=stored.source_format,
        content_sha256=stored.content_sha256,
        ciphertext_sha256=stored.ciphertext_sha256,
        row_count=stored.row_count,
        stored_bytes=stored.stored_bytes,
        storage_path=encrypted.relative,
        created_by=by,
    )
    # Each version's data key under a KEK of its own in its owner's key service: destroying
    # that KEK shreds the version wherever copies went, and no other key opens it.
    keys = owner_key_service(organization, KeyServiceAccess.from_settings(settings))
    version.kek_id = keys.create_key()
    version.wrapped_data_key = keys.wrap_dataset_key(
        version.kek_id,
        encrypted.data_key,
        context=version.key_context,
        name=dataset.qualified_name,
        jurisdiction=dataset.jurisdiction.code,
    )
    version.save()
    Column.objects.bulk_create(
        Column(
            version=version,
            position=position,
            name=spec.name,
            type=spec.type,
            role=spec.role,
            domain=spec.domain,
            lower=spec.lower,
            upper=spec.upper,
        )
        for position, spec in enumerate(specs)
    )
    record_platform_event(
        "dataset.registered" if number == 1 else "dataset.version_added",
        by=by,
        subject=f"dataset:{dataset.pk}",
        organization=f"org:{dataset.organization_id}",
        jurisdiction=dataset.jurisdiction.code,
        version=number,
        content_sha256=version.content_sha256,
        ciphertext_sha256=version.ciphertext_sha256,
        row_count=version.row_count,
        columns=[{"name": s.name, "type": s.type, "role": s.role} for s in specs],
    )
    return version


def register_dataset(
    *,
    organization: Organization,
    slug: str,
    name: str,
    jurisdiction: str,
    upload: Path,
    filename: str,
    schema: list[dict[str, Any]],
    by: User,
    description: str = "",
) -> DatasetVersion:
    """Create a dataset pinned to `jurisdiction` from an uploaded file and its confirmed schema.

    The new dataset gets a closed policy (nothing allowed) until its owners open it.
    """
    require(by, Permission.MANAGE_DATASETS, organization=organization)
    _check_key_custody(organization)
    _check_identifier(slug)
    pinned = _jurisdiction(jurisdiction)
    specs = parse_specs(schema)
    taken = IngestError(f"{organization.name} already has a dataset called {slug!r}.")
    if Dataset.objects.filter(organization=organization, slug=slug).exists():
        raise taken
    encrypted = _encrypt_upload(
        organization=organization,
        dataset_slug=slug,
        jurisdiction=pinned,
        upload=upload,
        filename=filename,
        specs=specs,
    )
    with _removed_on_failure(encrypted):
        try:
            with transaction.atomic():
                dataset = Dataset.objects.create(
                    organization=organization,
                    slug=slug,
                    name=name,
                    description=description,
                    jurisdiction=pinned,
                    created_by=by,
                )
                AnalysisPolicy.objects.create(
                    dataset=dataset,
                    version=1,
                    max_epsilon_per_query=Decimal("1"),
                    total_epsilon=Decimal("5"),
                    created_by=by,
                )
                return _record_version(
                    dataset=dataset, number=1, encrypted=encrypted, specs=specs, by=by
                )
        except IntegrityError:
            raise taken from None


def add_dataset_version(
    *, dataset: Dataset, upload: Path, filename: str, schema: list[dict[str, Any]], by: User
) -> DatasetVersion:
    require(by, Permission.MANAGE_DATASETS, organization=dataset.organization)
    _check_key_custody(dataset.organization)
    specs = parse_specs(schema)
    encrypted = _encrypt_upload(
        organization=dataset.organization,
        dataset_slug=dataset.slug,
        jurisdiction=dataset.jurisdiction,
        upload=upload,
        filename=filename,
        specs=specs,
    )
    with _removed_on_failure(encrypted), transaction.atomic():
        # Lock the dataset so two uploads cannot take the same version number.
        Dataset.objects.select_for_update().get(pk=dataset.pk)
        latest = dataset.versions.order_by("-number").values_list("number", flat=True).first()
        return _record_version(
            dataset=dataset, number=(latest or 0) + 1, encrypted=encrypted, specs=specs, by=by
        )


POLICY_FIELDS = (
    "allowed_join_keys",
    "allowed_dimensions",
    "allowed_measures",
    "allowed_filters",
    "allowed_aggregates",
    "allowed_mechanisms",
    "min_group_size",
    "max_rows_per_unit",
    "max_epsilon_per_query",
    "total_epsilon",
    "total_delta",
    "synthetic_allowed",
    "non_dp_synthetic_allowed",
    "max_synthetic_rows",
)
# Which column roles each allowance may name. The privacy unit may be a join key (one
# pseudonymous id is often all a dataset has to link on): a join key is only ever compared, as a
# seeded hash inside the TEE, never output, grouped by or filtered on
# (dataplane/privacy/README.md, "The privacy unit as a join key").
ROLE_FOR_ALLOWANCE = {
    "allowed_join_keys": {Column.Role.JOIN_KEY, Column.Role.UNIT},
    "allowed_dimensions": {Column.Role.DIMENSION},
    "allowed_measures": {Column.Role.MEASURE},
    "allowed_filters": {Column.Role.DIMENSION, Column.Role.MEASURE, Column.Role.OTHER},
}


class PolicyError(DomainError):
    code = "invalid_policy"


def _check_policy(dataset: Dataset, values: dict[str, Any]) -> None:
    version = dataset.versions.order_by("-number").first()
    roles = {c.name: c.role for c in version.columns.all()} if version else {}
    for allowance, allowed_roles in ROLE_FOR_ALLOWANCE.items():
        for name in values[allowance]:
            if name not in roles:
                raise PolicyError(f"{allowance.replace('_', ' ')}: no column called {name!r}.")
            if roles[name] not in allowed_roles:
                raise PolicyError(
                    f"{allowance.replace('_', ' ')}: {name!r} is a {roles[name]} column."
                )
    for name, choices in (
        ("allowed_aggregates", AnalysisPolicy.Aggregate.values),
        ("allowed_mechanisms", AnalysisPolicy.Mechanism.values),
    ):
        unknown = sorted(set(values[name]) - set(choices))
        if unknown:
            raise PolicyError(f"{name.replace('_', ' ')}: unknown {', '.join(unknown)}.")
    if values["max_epsilon_per_query"] <= 0 or values["total_epsilon"] <= 0:
        raise PolicyError("Privacy budgets (epsilon) must be positive.")
    if values["max_epsilon_per_query"] > values["total_epsilon"]:
        raise PolicyError("The maximum epsilon per query cannot exceed the total budget.")
    if not 0 <= values["total_delta"] < 1:
        raise PolicyError("Delta must be at least 0 and below 1.")
    if values["min_group_size"] < 1:
        raise PolicyError("The minimum group size must be at least 1.")
    if values["max_rows_per_unit"] < 1:
        raise PolicyError("The contribution bound (rows per privacy unit) must be at least 1.")
    if values["max_synthetic_rows"] < 1:
        raise PolicyError("The largest synthetic extract must have at least 1 row.")
    if values["non_dp_synthetic_allowed"] and not values["synthetic_allowed"]:
        raise PolicyError(
            "Non-DP synthetic extracts can only be allowed together with synthetic extracts."
        )


@transaction.atomic
def update_policy(
    *,
    dataset: Dataset,
    by: User,
    allowed_receivers: list[Organization] | None = None,
    **changes: Any,
) -> AnalysisPolicy:
    """Write a new policy version from the current one with `changes` applied."""
    require(by, Permission.MANAGE_POLICIES, organization=dataset.organization)
    unknown = set(changes) - set(POLICY_FIELDS)
    if unknown:
        raise PolicyError(f"Unknown policy settings: {', '.join(sorted(unknown))}.")
    Dataset.objects.select_for_update().get(pk=dataset.pk)
    # Every dataset is registered with its first policy.
    current = dataset.policies.latest("version")
    values = {name: getattr(current, name) for name in POLICY_FIELDS}
    values.update(changes)
    for name in ("max_epsilon_per_query", "total_epsilon", "total_delta"):
        values[name] = Decimal(str(values[name]))
    for name in ROLE_FOR_ALLOWANCE.keys() | {"allowed_aggregates", "allowed_mechanisms"}:
        values[name] = sorted(set(values[name]))
    _check_policy(dataset, values)
    receivers = (
        list(current.allowed_receivers.all()) if allowed_receivers is None else allowed_receivers
    )
    policy = AnalysisPolicy.objects.create(
        dataset=dataset, version=current.version + 1, created_by=by, **values
    )
    policy.allowed_receivers.set(receivers)
    recorded: dict[str, Any] = {
        name: str(value) if isinstance(value, Decimal) else value for name, value in values.items()
    }
    record_platform_event(
        "policy.changed",
        by=by,
        subject=f"dataset:{dataset.pk}",
        version=policy.version,
        **recorded,
        allowed_receivers=sorted(f"org:{org.pk}" for org in receivers),
    )
    return policy


def record_lockout(
    sender: object = None,
    request: HttpRequest | None = None,
    username: str | None = None,
    ip_address: str | None = None,
    **_: object,
) -> None:
    """django-axes locked a username out at an address after repeated wrong passwords."""
    record_platform_event(
        "account.locked_out",
        by=None,
        subject=f"username:{username or ''}",
        ip_address=ip_address or "",
        failures=settings.AXES_FAILURE_LIMIT,
    )
