"""Synthetic extracts in the language and the planner: a projection whose columns have public
domains or bins, refused where a policy does not allow it (naming who), charged what OpenDP's
maps say, and approved with its method, rows and cost inside the digest."""

from __future__ import annotations

from decimal import Decimal

import pytest

from dataplane.sql.parser import parse_query
from dataplane.sql.plan import Output, QueryError, Shape, Use
from jobs.models import Query
from jobs.planning.planner import plan_query
from jobs.queries.services import QueryRefused, check_runnable, revise_query, submit_query
from parties import services
from tests import factories
from tests.factories import propose
from tests.jobs.test_sql_parser import hospitals, unit_joinable

pytestmark = pytest.mark.django_db

JOINED = """SELECT d.age_band, d.diagnosis, v.length_of_stay AS stay
FROM charite.patients AS d JOIN usz.patients AS v ON d.person_hash = v.person_hash
WHERE d.sex = 'F'"""
UNIONED = """SELECT u.age_band, u.length_of_stay
FROM (SELECT age_band, length_of_stay FROM charite.patients
      UNION ALL SELECT age_band, length_of_stay FROM usz.patients) AS u"""


def allow_synthetic(world, room, *, non_dp=(), max_rows=100_000, delta=Decimal("1e-6")):
    """Open synthetic extracts on both hospitals' data (SDV's too for the orgs in `non_dp`)
    and give each a δ budget, then contribute the new policy versions to the room."""
    from jobs.rooms.services import contribute_dataset

    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        dataset = org.datasets.get(slug="patients")
        services.update_policy(
            dataset=dataset,
            by=owner,
            synthetic_allowed=True,
            non_dp_synthetic_allowed=org in non_dp,
            max_synthetic_rows=max_rows,
            total_delta=delta * 10,
        )
        contribute_dataset(room=room, dataset=dataset, by=owner)


def plan(world, room, sql=JOINED, **values):
    arguments = {
        "room": room,
        "sql": sql,
        "epsilon": Decimal("1"),
        "delta": Decimal("1e-6"),
        "receivers": [world.pharma],
        "output_kind": Output.SYNTHETIC,
        "synthetic_method": "dp-marginals",
        "synthetic_rows": 500,
    }
    return plan_query(**(arguments | values))


def failed(result) -> str:
    return " ".join(check.message for check in result.failed())


# The language -----------------------------------------------------------------------------------


def parse(sql: str):
    return parse_query(sql, hospitals(), output=Output.SYNTHETIC)


def test_a_projection_of_a_join_names_its_columns_and_their_uses():
    sql = """SELECT c.age_band, u.length_of_stay AS stay FROM charite.patients AS c
    JOIN usz.patients AS u ON c.person_hash = u.person_hash WHERE c.age_band = '65+'"""
    parsed = parse(sql)
    assert parsed.output is Output.SYNTHETIC and parsed.shape is Shape.JOIN
    assert [(p.column.dataset, p.column.column, p.alias) for p in parsed.projected] == [
        ("charite.patients", "age_band", "age_band"),
        ("usz.patients", "length_of_stay", "stay"),
    ]
    assert not parsed.aggregates and not parsed.dimensions
    assert ("usz.patients", "length_of_stay", Use.MEASURE) in parsed.uses
    assert ("charite.patients", "person_hash", Use.JOIN_KEY) in parsed.uses


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        (
            "SELECT age_band, patient_id FROM charite.patients",
            "patient_id is the privacy unit of charite.patients: it is never selected",
        ),
        (
            "SELECT c.age_band, c.person_hash FROM charite.patients AS c "
            "JOIN usz.patients AS u ON c.person_hash = u.person_hash",
            "person_hash is a join key of charite.patients: join keys pick out people, so "
            "they never appear in a synthetic extract",
        ),
        ("SELECT age_band, COUNT(*) FROM charite.patients", "COUNT is not allowed"),
        (
            "SELECT age_band FROM charite.patients GROUP BY age_band",
            "GROUP BY is not allowed: a synthetic extract is a projection",
        ),
        ("SELECT * FROM charite.patients", "SELECT * is not allowed"),
        ("SELECT readmitted FROM charite.patients", "has the role other"),
        ("SELECT length_of_stay + 1 FROM charite.patients", "is not allowed: a synthetic"),
    ],
)
def test_refusals_say_why(sql, reason):
    with pytest.raises(QueryError) as refused:
        parse(sql)
    assert reason in refused.value.reason


def test_an_extract_joined_on_the_privacy_unit_never_holds_the_unit():
    joined = "FROM charite.patients AS c JOIN usz.patients AS u ON c.patient_id = u.patient_id"
    parsed = parse_query(f"SELECT c.age_band {joined}", unit_joinable(), Output.SYNTHETIC)
    assert [p.column.column for p in parsed.projected] == ["age_band"]
    with pytest.raises(QueryError, match=r"patient_id is the privacy unit of usz\.patients"):
        parse_query(f"SELECT c.age_band, u.patient_id {joined}", unit_joinable(), Output.SYNTHETIC)


def test_a_column_the_policy_does_not_allow_is_refused():
    with pytest.raises(QueryError, match=r"usz\.patients.s policy does not allow cost"):
        parse("SELECT cost FROM usz.patients")


# The planner ------------------------------------------------------------------------------------


def test_synthetic_extracts_are_refused_until_every_owner_allows_them(world, tmp_path):
    room = world.study(tmp_path)
    result = plan(world, room)
    assert not result.ok
    assert (
        "Synthetic extracts are not allowed by the policy of Charité Berlin (charite.patients), "
        "University Hospital Zurich (usz.patients)." in failed(result)
    )


def test_a_non_dp_method_is_refused_naming_the_owner_who_does_not_allow_it(world, tmp_path):
    room = world.study(tmp_path)
    allow_synthetic(world, room, non_dp=[world.charite])
    result = plan(world, room, synthetic_method="sdv-gaussian-copula")
    assert not result.ok
    assert failed(result) == (
        "sdv-gaussian-copula is not differentially private, and the policy of University "
        "Hospital Zurich (usz.patients) does not allow non-DP synthetic extracts."
    )
    allowed = {a["dataset"]: a["allows_method"] for a in result.synthetic["allowed_by"]}
    assert allowed == {"charite.patients": True, "usz.patients": False}


def test_rows_above_a_policy_limit_are_refused(world, tmp_path):
    room = world.study(tmp_path)
    allow_synthetic(world, room, max_rows=400)
    assert "500 rows is above the largest extract" in failed(plan(world, room))


def test_the_dp_plan_shows_domains_bins_method_cost_and_who_allows_it(world, tmp_path):
    room = world.study(tmp_path)
    allow_synthetic(world, room)
    result = plan(world, room)
    assert result.ok, failed(result)
    assert result.mechanism == "tee"
    report = result.as_dict()
    synthetic = report["synthetic"]
    assert synthetic["method"] == "dp-marginals" and synthetic["differentially_private"]
    columns = {c["name"]: c for c in synthetic["columns"]}
    assert list(columns) == ["age_band", "diagnosis", "stay"]
    assert columns["age_band"]["categories"] == ["0-17", "18-39", "40-64", "65+"]
    assert columns["stay"]["bins"][0] == 0 and columns["stay"]["bins"][-1] == 61
    # One joined row per pair of unique keys, and a person may be on both sides: 2 L.
    assert synthetic["changed_rows_per_unit"] == 2
    cost = synthetic["cost"]
    assert Decimal(cost["epsilon"]) <= 1 and Decimal(cost["delta"]) <= Decimal("1e-6")
    charge = synthetic["charge"]
    assert Decimal(cost["epsilon"]) <= Decimal(charge["epsilon"]) <= 1
    # The privacy cost per dataset is the charge, on every dataset read.
    assert [(d["name"], Decimal(d["epsilon"]), d["delta"]) for d in report["datasets"]] == [
        ("charite.patients", Decimal(charge["epsilon"]), "0.000001"),
        ("usz.patients", Decimal(charge["epsilon"]), "0.000001"),
    ]
    assert all(a["allows_method"] for a in synthetic["allowed_by"])


def test_mpc_is_refused_for_an_extract(world, tmp_path):
    room = world.study(tmp_path)
    allow_synthetic(world, room)
    result = plan(world, room, UNIONED, mechanism="mpc")
    assert "a synthetic extract fits a model to rows, which runs in the TEE only" in failed(result)


def test_a_non_dp_method_charges_nothing_and_is_labelled(world, tmp_path):
    room = world.study(tmp_path)
    allow_synthetic(world, room, non_dp=[world.charite, world.zurich])
    result = plan(world, room, UNIONED, synthetic_method="sdv-ctgan", epsilon=Decimal(0))
    assert result.ok, failed(result)
    assert result.synthetic["label"] == "not differentially private"
    assert result.synthetic["charge"] == {"epsilon": "0", "delta": "0"}


# Approval binds the method, the rows and the cost ------------------------------------------------


def approved_extract(world, room):
    query = propose(
        room,
        world.bob,
        world.pharma,
        sql=JOINED,
        epsilon=Decimal("1"),
        delta=Decimal("1e-6"),
        output_kind=Query.OutputKind.SYNTHETIC,
        synthetic_method="dp-marginals",
        synthetic_rows=500,
    )
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    query.refresh_from_db()
    return query


def test_the_digest_covers_method_rows_and_charge(world, tmp_path):
    room = world.study(tmp_path)
    allow_synthetic(world, room, non_dp=[world.charite, world.zurich])
    query = approved_extract(world, room)
    assert query.status == Query.Status.APPROVED
    assert query.canonical["synthetic"]["method"] == "dp-marginals"
    assert query.canonical["synthetic"]["rows"] == 500
    check_runnable(query)
    for change in ({"synthetic_rows": 50_000}, {"synthetic_method": "sdv-ctgan"}):
        Query.objects.filter(pk=query.pk).update(**change)
        tampered = Query.objects.get(pk=query.pk)
        with pytest.raises(QueryRefused) as refused:
            check_runnable(tampered)
        assert refused.value.code == "digest_mismatch"
        Query.objects.filter(pk=query.pk).update(
            synthetic_rows=500, synthetic_method="dp-marginals"
        )
    check_runnable(Query.objects.get(pk=query.pk))


def test_an_edit_of_the_rows_is_a_new_version_without_approvals(world, tmp_path):
    room = world.study(tmp_path)
    allow_synthetic(world, room)
    query = approved_extract(world, room)
    draft = revise_query(query=query, by=world.bob, synthetic_rows=600)
    submitted = submit_query(query=draft, by=world.bob)
    assert submitted.digest != query.digest
    assert submitted.canonical["synthetic"]["rows"] == 600
    assert not submitted.approvals.exists()


# The owners' switches ---------------------------------------------------------------------------


def test_the_switches_are_off_by_default_and_changed_as_audited_policy_versions(world, tmp_path):
    from cleanroom.audit.log import PLATFORM_LOG, events_of
    from tests.factories import api

    room = world.study(tmp_path)
    contribution = room.contributions.get(dataset__organization=world.charite)
    assert not contribution.policy.synthetic_allowed
    assert not contribution.policy.non_dp_synthetic_allowed

    url = "/api/datasets/charite/patients/policy/"
    refused = api(world.alice).put(url, {"non_dp_synthetic_allowed": True}, format="json")
    assert refused.status_code == 400
    assert "only be allowed together with synthetic extracts" in refused.content.decode()
    changed = api(world.alice).put(
        url, {"synthetic_allowed": True, "max_synthetic_rows": 5000}, format="json"
    )
    assert changed.status_code == 200, changed.content
    body = changed.json()
    assert body["synthetic_allowed"] is True and body["non_dp_synthetic_allowed"] is False
    assert body["max_synthetic_rows"] == 5000
    assert api(world.bob).put(url, {"synthetic_allowed": True}, format="json").status_code in (
        403,
        404,
    )
    audited = [e["data"] for e in events_of(PLATFORM_LOG) if e["type"] == "policy.changed"]
    assert audited[-1]["synthetic_allowed"] is True
    assert audited[-1]["non_dp_synthetic_allowed"] is False
    assert audited[-1]["max_synthetic_rows"] == 5000


def test_the_policy_form_sets_the_switches(world, client, tmp_path):
    from tests.factories import dataset, patients_csv

    dataset(world.charite, world.alice, patients_csv(tmp_path / "p.csv", rows=20))
    client.force_login(world.alice)
    page = client.get("/datasets/charite/patients/policy/")
    assert b"Synthetic extracts allowed" in page.content
    form = page.context["form"]
    data = {
        name: value
        for name, value in form.initial.items()
        if value is not None and value is not False and name != "allowed_receivers"
    }
    data.update(synthetic_allowed="on", non_dp_synthetic_allowed="on", max_synthetic_rows=777)
    response = client.post("/datasets/charite/patients/policy/", data)
    assert response.status_code == 302, response.context["form"].errors
    policy = world.charite.datasets.get(slug="patients").policies.order_by("-version").first()
    assert policy.synthetic_allowed and policy.non_dp_synthetic_allowed
    assert policy.max_synthetic_rows == 777


def test_the_api_plans_and_submits_an_extract(world, tmp_path):
    from tests.factories import api

    room = world.study(tmp_path)
    allow_synthetic(world, room)
    client = api(world.bob)
    body = {
        "sql": JOINED,
        "epsilon": "1",
        "delta": "0.000001",
        "receivers": ["pharma"],
        "output_kind": "synthetic",
        "synthetic_rows": 250,
    }
    planned = client.post(f"/api/rooms/{room.slug}/queries/plan/", body, format="json").json()
    assert planned["ok"] and planned["output_kind"] == "synthetic"
    assert planned["synthetic"]["method"] == "dp-marginals"  # the default
    created = client.post(
        f"/api/rooms/{room.slug}/queries/",
        body
        | {
            "title": "Synthetic patients",
            "purpose": "Develop code",
            "expires_at": "2099-01-01T00:00:00Z",
            "submit": True,
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    query = created.json()
    assert query["status"] == "pending_approval"
    assert (query["synthetic_method"], query["synthetic_rows"]) == ("dp-marginals", 250)
    assert query["plan"]["synthetic"]["charge"]["epsilon"]
