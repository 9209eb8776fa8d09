"""The mechanisms an approved query can run under; each is one engine (jobs/engines/registry.py)
and a policy allows them by these values. And the stages of a job's plan: where an engine
places its work (an MPC job's step rows are of the input, compute and delivery stages)."""

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


class Stage(StrEnum):
    INPUT = "input"
    COMPUTE = "compute"
    ENCLAVE = "enclave"
    DELIVER = "deliver"

    @property
    def label(self) -> str:
        return _STAGE_LABELS[self]


_STAGE_LABELS = {
    Stage.INPUT: "Input",
    Stage.COMPUTE: "Compute party",
    Stage.ENCLAVE: "Enclave",
    Stage.DELIVER: "Delivery",
}
