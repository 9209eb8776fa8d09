"""What this deployment trusts of enclaves: the allow-listed measurements, the trusted roots,
and the simulated attestor of the embedded default, all from the TEE engine's configuration.

Host side only. The verifier itself (cleanroom/attestation/verify.py) takes these as arguments
and reads no configuration, since a key service runs its code too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from cleanroom.attestation.measured import measured_files
from cleanroom.attestation.simulated import SimulatedEnclave, SimulatedRoot
from cleanroom.attestation.trust import aws_nitro_root, measure, parse_measurements
from cleanroom.attestation.verify import AttestationError
from parties.keys import KeyServiceAccess


@dataclass(frozen=True)
class TeeConfig:
    code_root: Path  # the checkout whose data plane the enclave runs
    enclave_timeout: float
    synthesis_time_limit: float
    # The simulated attestor of the embedded default; production refuses it (check --deploy).
    allow_simulated: bool
    simulated_root_dir: Path
    measurement_allowlist: tuple[str, ...] = ()
    # Where each owner's key service is, and how this host signs its requests to them.
    key_services: KeyServiceAccess = field(default_factory=KeyServiceAccess)

    @classmethod
    def from_settings(cls, settings: Any) -> TeeConfig:
        return cls(
            code_root=Path(settings.BASE_DIR),
            enclave_timeout=settings.TEE_ENCLAVE_TIMEOUT,
            synthesis_time_limit=settings.SYNTHESIS_TIME_LIMIT,
            allow_simulated=bool(getattr(settings, "TEE_ALLOW_SIMULATED", False)),
            simulated_root_dir=Path(settings.TEE_SIMULATED_ROOT_DIR),
            measurement_allowlist=tuple(getattr(settings, "TEE_MEASUREMENT_ALLOWLIST", None) or ()),
            key_services=KeyServiceAccess.from_settings(settings),
        )


def configured_measurements(config: TeeConfig) -> list[dict[int, bytes]]:
    """The configured allow-list as entries for verify_attestation (see parse_measurements);
    empty when none is configured."""
    return parse_measurements(list(config.measurement_allowlist))


def enclave_measurements(config: TeeConfig) -> dict[int, bytes]:
    """The measurement of this checkout's enclave code (the data plane package)."""
    return measure(measured_files(config.code_root))


def allowed_measurements(config: TeeConfig) -> list[dict[int, bytes]]:
    """The configured allow-list; with none configured, the embedded default allows this
    checkout's own enclave code."""
    return configured_measurements(config) or [{0: enclave_measurements(config)[0]}]


def trusted_roots(config: TeeConfig) -> list[x509.Certificate]:
    """The roots trusted: AWS Nitro Root-G1, and this deployment's simulated root only while
    the simulated TEE is allowed (production: not, see check --deploy)."""
    roots = [aws_nitro_root()]
    if config.allow_simulated:
        roots.append(SimulatedRoot.load_or_create(config.simulated_root_dir).certificate)
    return roots


def simulated_enclave(config: TeeConfig, *, module_id: str | None = None) -> SimulatedEnclave:
    """This deployment's simulated attestor; refused unless the simulated TEE is allowed."""
    if not config.allow_simulated:
        raise AttestationError(
            "the simulated TEE is disabled (TEE_ALLOW_SIMULATED is false)", code="untrusted_root"
        )
    return SimulatedEnclave(
        SimulatedRoot.load_or_create(config.simulated_root_dir), module_id=module_id
    )
