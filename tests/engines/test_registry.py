"""Every mechanism a policy can allow and an analyst can request has exactly one engine, and
the choices the models offer are the data plane's enums, defined once."""

from __future__ import annotations

from dataplane.mechanisms import Mechanism
from dataplane.sql.plan import AggregateKind, ColumnRole
from jobs.engines.registry import ENGINES, engine_of
from jobs.models import Query
from parties.models import AnalysisPolicy, Column


def test_each_mechanism_has_its_engine_and_each_engine_its_mechanism():
    assert list(ENGINES) == list(Mechanism)
    for mechanism in Mechanism:
        assert engine_of(mechanism).name == mechanism


def test_the_models_offer_the_data_planes_values():
    assert AnalysisPolicy.Mechanism.values == [m.value for m in Mechanism]
    assert Query.Mechanism.values == ["auto", *(m.value for m in Mechanism)]
    assert AnalysisPolicy.Aggregate.values == [a.value for a in AggregateKind]
    assert Column.Role.values == [r.value for r in ColumnRole]
