"""The MPC engine's configuration, built from the deployment's settings by the registry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.engines.mpc import inbox
from parties.keys import KeyServiceAccess


@dataclass(frozen=True)
class MpcConfig:
    code_root: Path  # the checkout whose party program the parties run
    # The local site's folder: the MPC CA's certificate (the trust anchor) and this site's own
    # keys, if it is a party site (certificates.py).
    credentials: Path
    party_timeout: float
    port_base: int
    # Where each party site listens, by site name; 127.0.0.1 when not named.
    party_hosts: Mapping[str, str] = field(default_factory=dict)
    # Where each owner's key service is: input steps ask it for their own dataset's key.
    key_services: KeyServiceAccess = field(default_factory=KeyServiceAccess)
    # Where every party's certificate is found (parties/<site>/tls.crt); None: `credentials`.
    certificates: Path | None = None
    # Where each party site's share inbox listens and is reached, by site name (inbox.py);
    # 127.0.0.1 and port_base + 8192 + the site's id when not named.
    inbox_addresses: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    # The folder whose <site>/ subfolder a party's inbox stores received shares in.
    inbox_root: Path = Path("mpc-inbox")

    @classmethod
    def from_settings(cls, settings: Any) -> MpcConfig:
        return cls(
            code_root=Path(settings.BASE_DIR),
            credentials=Path(settings.MPC_CREDENTIALS_DIR),
            party_timeout=settings.MPC_PARTY_TIMEOUT,
            port_base=settings.MPC_PORT_BASE,
            party_hosts=dict(settings.MPC_PARTY_ADDRESSES),
            key_services=KeyServiceAccess.from_settings(settings),
            certificates=(
                Path(settings.MPC_CERTIFICATES_DIR) if settings.MPC_CERTIFICATES_DIR else None
            ),
            inbox_addresses=inbox.addresses(settings.MPC_INBOX_ADDRESSES),
            inbox_root=Path(settings.MPC_INBOX_DIR),
        )
