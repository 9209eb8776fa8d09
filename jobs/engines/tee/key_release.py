"""The release of data keys to an attested enclave, decided by each owner's key service.

The host verifies the attestation document first (so a forged or unbound document is refused
and audited before any owner is asked) and decides residency for every dataset; the job is
then charged, committed before any key can leave (the recorder's `charge_at_key_release`, which
the job lifecycle implements), so one charge buys one enclave's noisy release. Then each
dataset's owner key service decides for itself (keyservice/release.py: its own trust roots,
allow-list, approval keys, residency and release log) and answers with the data key sealed to
the enclave's ephemeral key: the host relays ciphertext it cannot open. Any refusal refuses
every key, with the reason; each verdict and each release is an audit event.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

from cleanroom.attestation import verify as attestation
from cleanroom.attestation.binding import binding
from cleanroom.residency import StepKind, decide
from jobs.engines.base import EngineError, Recorder, canonical_of, job_site_of
from jobs.engines.tee import trust
from jobs.models import Approval, Job
from keyservice.client import KeyServiceUnavailable
from keyservice.release import Refused, ReleaseRequest
from parties.keys import owner_key_service
from parties.models import DatasetVersion


def release_keys(
    job: Job, document: bytes, *, config: trust.TeeConfig, recorder: Recorder
) -> dict[str, str]:
    # This deployment's trust, once per job: the host's own check below, and the embedded key
    # service's (an owner's own service pins its own and is not handed these).
    trusted_roots = trust.trusted_roots(config)
    allowed_measurements = trust.allowed_measurements(config)
    try:
        verified = attestation.verify_attestation(
            document,
            trusted_roots=trusted_roots,
            at=datetime.now(UTC),
            allowed_measurements=allowed_measurements,
            expected_user_data=binding(job.pk, job.query.digest),
        )
    except attestation.AttestationError as exc:
        recorder.attestation(
            job.pk,
            {"evidence_sha256": _sha256(document)},
            accepted=False,
            reason=str(exc),
            evidence=document,
        )
        raise EngineError(f"Attestation refused: {exc}") from None
    recorder.attestation(
        job.pk,
        {
            "kind": verified.kind,
            "module_id": verified.module_id,
            "measurements": {
                str(i): pcr.hex() for i, pcr in sorted(verified.pcrs.items()) if any(pcr)
            },
            "evidence_sha256": verified.evidence_sha256,
            "root_sha256": verified.root_sha256,
        },
        accepted=True,
        evidence=document,
    )
    # Every dataset is decided before any key is asked for: one refusal refuses them all.
    allowed = []
    site = job_site_of(job)
    for dataset_id, item in zip(
        job.query.dataset_ids, canonical_of(job.query)["datasets"], strict=True
    ):
        version = DatasetVersion.objects.select_related(
            "dataset__organization", "dataset__jurisdiction"
        ).get(dataset_id=dataset_id, number=item["version"])
        decision = decide(
            StepKind.PROCESS_ROWS, data=version.dataset.jurisdiction.rules(), site=site.place()
        )
        if not decision.allowed:
            raise EngineError(f"Key service refuses {item['name']}: {decision.reason}")
        allowed.append((item, version))
    recorder.charge_at_key_release(job.pk)
    keys = {}
    for item, version in allowed:
        owner = version.dataset.organization
        request = release_request(job, version, document)
        try:
            service = owner_key_service(
                owner,
                config.key_services,
                trusted_roots=trusted_roots,
                allowed_measurements=allowed_measurements,
            )
            released = service.release(request)
        except (Refused, KeyServiceUnavailable) as exc:
            raise EngineError(f"{owner.name}'s key service refuses {item['name']}: {exc}") from None
        keys[item["name"]] = base64.b64encode(released.sealed_key).decode()
        recorder.key_released(
            job.pk, dataset=version.dataset_id, site=site.name, reason=released.reason
        )
    return keys


def release_request(job: Job, version: DatasetVersion, document: bytes) -> ReleaseRequest:
    """What the host relays to the owner's key service for one dataset of the job."""
    approval = Approval.objects.get(
        query=job.query,
        organization=version.dataset.organization,
        decision=Approval.Decision.APPROVE,
        revoked_at__isnull=True,
    )
    return ReleaseRequest(
        job=job.pk,
        query=job.query_id,
        dataset=version.dataset_id,
        canonical=canonical_of(job.query),
        approval=approval.evidence,
        document=document,
        site=job_site_of(job).name,
        kek_id=version.kek_id,
        wrapped_key=bytes(version.wrapped_data_key),
        key_context=version.key_context,
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
