"""The key service's release of data keys to an attested enclave.

A dataset's data key is unwrapped and sealed to the enclave's ephemeral key only when: the
attestation document verifies against a trusted root, its measurements are on the allow-list,
its user data binds this job and the approved query's digest, residency allows rows of the
dataset's jurisdiction at the enclave's site, and the job is running and has never had its keys
released before. The job is charged, and the charge committed, before the first key is
unwrapped (the recorder's `charge_at_key_release`, which the job lifecycle implements), so one
charge buys one enclave's noisy release. Each verdict and each release is an audit event (the
recorder's); any failure refuses every key, with the reason.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

from cleanroom.attestation import verify as attestation
from cleanroom.attestation.binding import binding
from cleanroom.crypto.keys import key_service
from cleanroom.crypto.sealing import seal
from cleanroom.residency import StepKind, decide
from dataplane.enclave import key_context
from jobs.engines.base import EngineError, Recorder
from jobs.engines.tee import trust
from jobs.models import Job
from parties.models import DatasetVersion


def release_keys(
    job: Job, document: bytes, *, config: trust.TeeConfig, recorder: Recorder
) -> dict[str, str]:
    try:
        verified = attestation.verify_attestation(
            document,
            trusted_roots=trust.trusted_roots(config),
            at=datetime.now(UTC),
            allowed_measurements=trust.allowed_measurements(config),
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
    # Every dataset is decided before any key is unwrapped: one refusal refuses them all.
    allowed = []
    for dataset_id, item in zip(
        job.query.dataset_ids, job.query.canonical["datasets"], strict=True
    ):
        version = DatasetVersion.objects.select_related(
            "dataset__organization", "dataset__jurisdiction"
        ).get(dataset_id=dataset_id, number=item["version"])
        decision = decide(
            StepKind.PROCESS_ROWS, data=version.dataset.jurisdiction.rules(), site=job.site.place()
        )
        if not decision.allowed:
            raise EngineError(f"Key service refuses {item['name']}: {decision.reason}")
        allowed.append((item, version, decision))
    recorder.charge_at_key_release(job.pk)
    keys = {}
    for item, version, decision in allowed:
        data_key = key_service().unwrap(
            version.kek_id, bytes(version.wrapped_data_key), context=version.key_context
        )
        keys[item["name"]] = base64.b64encode(
            seal(verified.public_key, data_key, context=key_context(job.pk, item["name"]))
        ).decode()
        recorder.key_released(
            job.pk, dataset=version.dataset_id, site=job.site.name, reason=decision.reason
        )
    return keys


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
