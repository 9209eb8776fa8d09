"""The release of data keys to an attested enclave, decided by each owner's key service.

The host verifies the attestation document first (so a forged or unbound document is refused
and audited before any owner is asked); the control plane then decides residency for every
dataset again and charges the job, committed before any key can leave (the recorder's
`charge_at_key_release`, which the job lifecycle implements), so one charge buys one enclave's
noisy release. Everything the host relays comes from the attempt's work order. Then each
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
from jobs.engines.base import EngineError, Recorder
from jobs.engines.orders import DatasetOrder, WorkOrder
from jobs.engines.tee import trust
from keyservice.client import KeyServiceUnavailable
from keyservice.release import Refused, ReleaseRequest
from parties.keys import ordered_key_service


def release_keys(
    order: WorkOrder, document: bytes, *, config: trust.TeeConfig, recorder: Recorder
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
            expected_user_data=binding(order.job, order.digest),
        )
    except attestation.AttestationError as exc:
        recorder.attestation(
            order.job,
            {"evidence_sha256": _sha256(document)},
            accepted=False,
            reason=str(exc),
            evidence=document,
        )
        raise EngineError(f"Attestation refused: {exc}") from None
    recorder.attestation(
        order.job,
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
    # The control plane decides residency for every dataset again before it charges: one
    # refusal refuses every key, uncharged.
    recorder.charge_at_key_release(order.job)
    keys = {}
    for dataset in order.datasets:
        try:
            service = ordered_key_service(
                dataset.owner,
                dataset.key_service,
                config.key_services,
                trusted_roots=trusted_roots,
                allowed_measurements=allowed_measurements,
            )
            released = service.release(release_request(order, dataset, document))
        except (Refused, KeyServiceUnavailable) as exc:
            raise EngineError(
                f"{dataset.owner}'s key service refuses {dataset.name}: {exc}"
            ) from None
        keys[dataset.name] = base64.b64encode(released.sealed_key).decode()
        recorder.key_released(
            order.job, dataset=dataset.dataset, site=order.site, reason=released.reason
        )
    return keys


def release_request(order: WorkOrder, dataset: DatasetOrder, document: bytes) -> ReleaseRequest:
    """What the host relays to the owner's key service for one dataset of the job."""
    return ReleaseRequest(
        job=order.job,
        query=order.query,
        dataset=dataset.dataset,
        canonical=order.canonical,
        approval=dataset.approval,
        document=document,
        site=order.site,
        kek_id=dataset.kek_id,
        wrapped_key=dataset.wrapped_key,
        key_context=dataset.key_context,
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
