"""Every mechanism a policy can allow and an analyst can request has exactly one engine, and
the choices the models offer are the data plane's enums, defined once."""

from __future__ import annotations

from dataplane.mechanisms import Mechanism, Stage
from dataplane.sql.plan import AggregateKind, ColumnRole
from jobs.engines.registry import ENGINES, engine_of
from jobs.models import JobStep, Query
from parties.models import AnalysisPolicy, Column


def test_each_mechanism_has_its_engine_and_each_engine_its_mechanism():
    assert list(ENGINES) == list(Mechanism)
    for mechanism in Mechanism:
        assert engine_of(mechanism).name == mechanism


def members(enum) -> list[tuple[str, str, str]]:
    return [(m.name, m.value, m.label) for m in enum]


def test_the_models_offer_the_data_planes_members_values_and_labels():
    assert members(AnalysisPolicy.Mechanism) == members(Mechanism)
    assert members(Query.Mechanism) == [("AUTO", "auto", "Automatic"), *members(Mechanism)]
    assert members(AnalysisPolicy.Aggregate) == members(AggregateKind)
    assert members(Column.Role) == members(ColumnRole)
    # A job of steps has every stage but the enclave's, which is a TEE job's single run.
    assert members(JobStep.Kind) == [m for m in members(Stage) if m[0] != "ENCLAVE"]
