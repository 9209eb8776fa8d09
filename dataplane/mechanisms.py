"""The mechanisms an approved query can run under; each is one engine (jobs/engines/registry.py)
and a policy allows them by these values."""

from __future__ import annotations

from enum import StrEnum


class Mechanism(StrEnum):
    MPC = "mpc"
    TEE = "tee"

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Mechanism.MPC: "MPC secret sharing",
    Mechanism.TEE: "Trusted execution environment",
}
