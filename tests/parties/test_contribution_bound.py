"""Owners see and set L, the contribution bound (rows per privacy unit), on the policy page and
through the API; every policy setting reaches the form, the API's input and its output."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from cleanroom.audit.log import PLATFORM_LOG, events_of
from jobs.planning.planner import plan_query
from jobs.rooms.services import contribute_dataset
from parties.forms import PolicyForm
from parties.models import AnalysisPolicy, Dataset, DatasetVersion
from parties.serializers import PolicyInputSerializer, PolicySerializer
from parties.services import POLICY_FIELDS
from tests import factories
from tests.factories import JOIN_SQL

POLICY = "/api/datasets/charite/patients/policy/"


@pytest.fixture
def patients(world, patients_csv) -> DatasetVersion:
    return factories.dataset(world.charite, world.alice, patients_csv)


def versions() -> list[tuple[int, int]]:
    return list(AnalysisPolicy.objects.values_list("version", "max_rows_per_unit"))


def test_every_policy_setting_is_in_the_form_and_the_api_input_and_output():
    settings = {*POLICY_FIELDS, "allowed_receivers"}
    assert set(PolicyForm.base_fields) == settings
    assert set(PolicyInputSerializer().fields) == settings
    assert settings <= set(PolicySerializer().fields)


@pytest.mark.django_db
def test_an_owner_sets_L_through_the_api_and_reads_it_back(world, patients):
    client = factories.api(world.alice)
    assert client.get(POLICY).json()["max_rows_per_unit"] == 1

    response = client.put(POLICY, {"max_rows_per_unit": 3}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["max_rows_per_unit"] == 3
    assert client.get(POLICY).json()["max_rows_per_unit"] == 3
    assert versions() == [(2, 3), (1, 1)]
    event = events_of(PLATFORM_LOG)[-1]
    assert (event["type"], event["data"]["max_rows_per_unit"]) == ("policy.changed", 3)


@pytest.mark.django_db
@pytest.mark.parametrize("bad", [0, -2, 2.5, "two", None])
def test_a_bound_that_is_not_a_whole_number_of_at_least_one_is_refused_by_the_api(
    world, patients, bad
):
    events = len(events_of(PLATFORM_LOG))
    response = factories.api(world.alice).put(POLICY, {"max_rows_per_unit": bad}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert "max_rows_per_unit" in error["fields"], error
    assert versions() == [(1, 1)]
    assert len(events_of(PLATFORM_LOG)) == events


def form_data(policy: AnalysisPolicy, **changes) -> dict:
    """The policy page's form as the browser sends it, filled in from `policy`."""
    data = {}
    for name, value in {**PolicyForm.initial_from(policy), **changes}.items():
        if name == "allowed_receivers":
            data[name] = [org.pk for org in value]
        elif isinstance(value, bool):
            if value:
                data[name] = "on"
        else:
            data[name] = value
    return data


@pytest.mark.django_db
def test_an_owner_sets_L_on_the_policy_page_and_a_bad_value_stores_nothing(world, patients):
    browser = Client()
    browser.force_login(world.alice)
    url = reverse("policy-edit", args=["charite", "patients"])
    page = browser.get(url).content.decode()
    assert "Rows per privacy unit (L)" in page
    current = AnalysisPolicy.objects.get()

    for bad in ("0", "1.5", ""):
        response = browser.post(url, form_data(current, max_rows_per_unit=bad))
        assert response.status_code == 200
        assert response.context["form"].errors["max_rows_per_unit"], bad
        assert versions() == [(1, 1)]

    response = browser.post(url, form_data(current, max_rows_per_unit="2"))
    assert response.status_code == 302
    assert versions() == [(2, 2), (1, 1)]
    new = AnalysisPolicy.objects.get(version=2)
    assert [getattr(new, n) for n in POLICY_FIELDS if n != "max_rows_per_unit"] == [
        getattr(current, n) for n in POLICY_FIELDS if n != "max_rows_per_unit"
    ]
    detail = browser.get(reverse("dataset-detail", args=["charite", "patients"])).content
    assert "Rows per privacy unit (L)</dt><dd>at most 2;" in detail.decode()


@pytest.mark.django_db
def test_the_plan_and_the_composer_show_each_datasets_bound(world, tmp_path):
    room = world.study(tmp_path)
    charite = Dataset.objects.get(organization=world.charite)
    response = factories.api(world.alice).put(
        "/api/datasets/charite/patients/policy/", {"max_rows_per_unit": 4}, format="json"
    )
    assert response.status_code == 200
    contribute_dataset(room=room, dataset=charite, by=world.alice)

    plan = plan_query(
        room=room, sql=JOIN_SQL, epsilon=Decimal("0.5"), receivers=[world.pharma]
    ).as_dict()
    assert {d["name"]: d["rows_per_unit"] for d in plan["datasets"]} == {
        "charite.patients": 4,
        "usz.patients": 1,
    }

    browser = Client()
    browser.force_login(world.bob)
    page = browser.post(
        reverse("query-plan", args=[room.slug]),
        {"sql": JOIN_SQL, "epsilon": "0.5", "delta": "0", "mechanism": "auto"},
    ).content.decode()
    assert "Rows per unit (L)" in page
    assert "<td>4</td>" in page and "<td>1</td>" in page
