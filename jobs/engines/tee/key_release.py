"""The key service's release of data keys to an attested enclave.

A dataset's data key is unwrapped and sealed to the enclave's ephemeral key only when: the
attestation document verifies against a trusted root, its measurements are on the allow-list,
its user data binds this job and the approved query's digest, residency allows rows of the
dataset's jurisdiction at the enclave's site, and the job is running and has never had its keys
released before. The job is charged, and the charge committed, before the first key is
unwrapped (`runner.charge_at_key_release`), so one charge buys one enclave's noisy release.
Each verdict and each release is an audit event; any failure refuses every key, with the
reason.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

from cleanroom.crypto.keys import key_service
from cleanroom.crypto.sealing import seal
from cleanroom.residency import StepKind, decide
from dataplane.binding import binding
from dataplane.enclave import key_context
from jobs import runner
from jobs.engines.base import EngineError
from jobs.engines.tee import attestation, trust
from jobs.engines.tee.measured import measured_files
from jobs.models import Job
from parties.models import DatasetVersion


def enclave_measurements() -> dict[int, bytes]:
    return attestation.measure(measured_files(Path(settings.BASE_DIR)))


def allowed_measurements() -> list[dict[int, bytes]]:
    """The configured allow-list (TEE_MEASUREMENT_ALLOWLIST); with none configured, the embedded
    default allows this checkout's own enclave code."""
    return trust.configured_measurements() or [{0: enclave_measurements()[0]}]


def release_keys(job: Job, document: bytes) -> dict[str, str]:
    try:
        verified = attestation.verify_attestation(
            document,
            trusted_roots=trust.trusted_roots(),
            at=datetime.now(UTC),
            allowed_measurements=allowed_measurements(),
            expected_user_data=binding(job.pk, job.query.digest),
        )
    except attestation.AttestationError as exc:
        runner.record_attestation(
            job.pk,
            {"evidence_sha256": _sha256(document)},
            accepted=False,
            reason=str(exc),
            evidence=document,
        )
        raise EngineError(f"Attestation refused: {exc}") from None
    runner.record_attestation(
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
    try:
        runner.charge_at_key_release(job.pk)
    except runner.JobRefused as exc:
        raise EngineError(str(exc)) from None
    keys = {}
    for item, version, decision in allowed:
        data_key = key_service().unwrap(
            version.kek_id, bytes(version.wrapped_data_key), context=version.key_context
        )
        keys[item["name"]] = base64.b64encode(
            seal(verified.public_key, data_key, context=key_context(job.pk, item["name"]))
        ).decode()
        runner.record_key_release(
            job.pk, dataset=version.dataset_id, site=job.site.name, reason=decision.reason
        )
    return keys


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
