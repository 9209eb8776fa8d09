"""What this deployment trusts of enclaves, from its settings: the allow-listed measurements,
the trusted roots, and the simulated attestor of the embedded default.

Host side only. The verifier itself (jobs/engines/tee/attestation.py) takes these as arguments
and reads no settings, since the enclave runs its code too.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from django.conf import settings

from jobs.engines.tee.attestation import (
    AttestationError,
    SimulatedEnclave,
    SimulatedRoot,
    aws_nitro_root,
    parse_measurements,
)


def configured_measurements() -> list[dict[int, bytes]]:
    """settings.TEE_MEASUREMENT_ALLOWLIST as entries for verify_attestation (see
    parse_measurements); empty when none is configured."""
    return parse_measurements(getattr(settings, "TEE_MEASUREMENT_ALLOWLIST", None) or [])


def trusted_roots() -> list[x509.Certificate]:
    """The roots settings trust: AWS Nitro Root-G1, and this deployment's simulated root only
    while settings.TEE_ALLOW_SIMULATED is true (production: false, see check --deploy)."""
    roots = [aws_nitro_root()]
    if getattr(settings, "TEE_ALLOW_SIMULATED", False):
        roots.append(SimulatedRoot.load_or_create(simulated_root_dir()).certificate)
    return roots


def simulated_root_dir() -> Path:
    return Path(settings.TEE_SIMULATED_ROOT_DIR)


def simulated_enclave(*, module_id: str | None = None) -> SimulatedEnclave:
    """This deployment's simulated attestor (settings.TEE_SIMULATED_ROOT_DIR); refused unless
    settings.TEE_ALLOW_SIMULATED is true."""
    if not getattr(settings, "TEE_ALLOW_SIMULATED", False):
        raise AttestationError(
            "the simulated TEE is disabled (TEE_ALLOW_SIMULATED is false)", code="untrusted_root"
        )
    return SimulatedEnclave(SimulatedRoot.load_or_create(simulated_root_dir()), module_id=module_id)
