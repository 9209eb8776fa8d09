"""The engines, by mechanism. Adding an engine is a folder under jobs/engines/ and one line
here (and its mechanism in dataplane/mechanisms.py); the order is the planner's preference
when the analyst leaves the choice to it: MPC where it fits, since no party's rows then leave
its site, else the TEE."""

from __future__ import annotations

from typing import Any, TypeVar, cast

from dataplane.mechanisms import Mechanism
from jobs.engines.base import Engine, EngineError, Recorder, SiteEngine, StepEngine
from jobs.engines.mpc.engine import MpcEngine
from jobs.engines.tee.engine import TeeEngine

ENGINES: dict[Mechanism, type[Engine]] = {
    Mechanism.MPC: MpcEngine,
    Mechanism.TEE: TeeEngine,
}


def engine_of(mechanism: str) -> type[Engine]:
    """The engine class of `mechanism`: what planning and step creation ask."""
    return ENGINES[Mechanism(mechanism)]


def site_engine_of(mechanism: str) -> type[SiteEngine]:
    """The engine class of `mechanism`, whose jobs are one step at one site."""
    kind = engine_of(mechanism)
    if kind.in_steps:
        raise EngineError(f"The {mechanism} engine runs a job as steps, not at one site.")
    # As in step_engine_of: `in_steps` is what tells the two interfaces apart.
    return cast(type[SiteEngine], kind)


def step_engine_of(mechanism: str) -> type[StepEngine]:
    """The engine class of `mechanism`, whose jobs run as steps at several sites."""
    kind = engine_of(mechanism)
    if not kind.in_steps:
        raise EngineError(f"The {mechanism} engine does not run a job as steps.")
    # `in_steps` is what says an engine is a StepEngine: a protocol with attributes cannot be
    # checked with issubclass.
    return cast(type[StepEngine], kind)


AnyEngine = TypeVar("AnyEngine", bound=Engine)


def build(kind: type[AnyEngine], *, settings: Any, recorder: Recorder) -> AnyEngine:
    """An engine of class `kind` ready to run: configured from `settings` (an object with the
    deployment's settings as attributes), recording through `recorder`."""
    return kind(kind.Config.from_settings(settings), recorder)


def configured(mechanism: str, *, settings: Any, recorder: Recorder) -> Engine:
    """The engine of `mechanism` ready to run (`build`)."""
    return build(engine_of(mechanism), settings=settings, recorder=recorder)
