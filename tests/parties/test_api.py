"""The parties REST API, endpoint by endpoint and persona by persona: the owner succeeds, members
of the organisation who may not write get 403 and change nothing, outsiders and the regulator
see nothing (404 or an empty list), and no response ever carries a row value."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from cleanroom.audit.log import PLATFORM_LOG, events_of
from cleanroom.audit.models import AuditEvent
from jobs.rooms.services import contribute_dataset, respond_to_invitation
from parties import services
from parties.models import AnalysisPolicy, Dataset, DatasetVersion
from parties.storage import stored_file
from tests import factories

DATASET = "/api/datasets/charite/patients/"
ENDPOINTS = [
    ("get", "/api/organizations/"),
    ("get", "/api/jurisdictions/"),
    ("get", "/api/sites/"),
    ("get", "/api/datasets/"),
    ("post", "/api/datasets/"),
    ("post", "/api/datasets/infer-schema/"),
    ("get", DATASET),
    ("get", DATASET + "versions/"),
    ("post", DATASET + "versions/"),
    ("get", DATASET + "policy/"),
    ("put", DATASET + "policy/"),
    ("get", DATASET + "policies/"),
]
READS = [url for method, url in ENDPOINTS if method == "get"]


@pytest.fixture
def patients(world, patients_csv) -> DatasetVersion:
    """charite.patients, registered by alice."""
    return factories.dataset(world.charite, world.alice, patients_csv)


@pytest.fixture
def erin(world) -> User:
    """An analyst of charite."""
    erin = factories.user("erin")
    services.add_membership(organization=world.charite, user=erin, role="analyst")
    return erin


def state() -> dict:
    return {
        "datasets": list(Dataset.objects.values_list("organization__slug", "slug")),
        "versions": list(DatasetVersion.objects.values_list("dataset__slug", "number")),
        "policies": list(AnalysisPolicy.objects.values_list("dataset__slug", "version")),
        "stored files": sorted(p for p in Path(settings.STORAGE_ROOT).rglob("*") if p.is_file())
        if Path(settings.STORAGE_ROOT).exists()
        else [],
        "temporary files": sorted(Path(settings.FILE_UPLOAD_TEMP_DIR).iterdir()),
        "audit events": AuditEvent.objects.count(),
    }


def upload(client: APIClient, url: str, path: Path, **fields):
    data = {"schema": json.dumps(factories.patients_schema()), **fields}
    with path.open("rb") as handle:
        return client.post(url, {"file": handle, **data}, format="multipart")


def new_dataset(client: APIClient, path: Path, organization: str = "charite"):
    return upload(
        client,
        "/api/datasets/",
        path,
        organization=organization,
        slug="patients",
        name="Patients",
        jurisdiction="EU",
    )


def results(response) -> list:
    assert response.status_code == 200, response.content
    return response.json()["results"]


# --- authentication and methods --------------------------------------------------------------


@pytest.mark.parametrize(("method", "url"), ENDPOINTS)
def test_an_anonymous_caller_gets_401_everywhere(db, method, url):
    response = getattr(APIClient(), method)(url)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("post", "/api/organizations/"),
        ("delete", "/api/jurisdictions/"),
        ("post", "/api/sites/"),
        ("put", "/api/datasets/"),
        ("get", "/api/datasets/infer-schema/"),
        ("delete", DATASET),
        ("patch", DATASET),
        ("delete", DATASET + "versions/"),
        ("post", DATASET + "policy/"),
        ("patch", DATASET + "policy/"),
        ("post", DATASET + "policies/"),
    ],
)
def test_a_wrong_method_gets_405_and_changes_nothing(world, patients, method, url):
    before = state()
    response = getattr(factories.api(world.alice), method)(url)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert state() == before


# --- reference data ---------------------------------------------------------------------------


def test_a_member_sees_only_their_own_organisations(world):
    assert results(factories.api(world.alice).get("/api/organizations/")) == [
        {"id": world.charite.pk, "slug": "charite", "name": "Charité Berlin"}
    ]
    assert [
        o["slug"] for o in results(factories.api(world.mallory).get("/api/organizations/"))
    ] == [world.outsider.slug]
    assert results(factories.api(world.rita).get("/api/organizations/")) == []


def test_jurisdictions_list_their_transfer_rules(world):
    rows = {j["code"]: j for j in results(factories.api(world.alice).get("/api/jurisdictions/"))}
    assert sorted(rows) == ["CH", "EU", "UK", "US"]
    assert rows["EU"]["raw_processing_in"] == ["EU"]
    assert rows["US"]["shares_may_go_to"] == ["US"]
    assert "GDPR" in rows["EU"]["legal_framework"]


def test_sites_list_their_jurisdiction_kind_and_queue(world):
    sites = {s["name"]: s for s in results(factories.api(world.bob).get("/api/sites/"))}
    assert sites["eu-frankfurt"] == {
        "name": "eu-frankfurt",
        "jurisdiction": "EU",
        "kind": "worker",
        "queue": "site.eu-frankfurt",
        "description": "Data-plane worker, Frankfurt",
        "active": True,
    }
    assert {s["kind"] for s in sites.values()} == {"worker", "tee", "mpc-party"}


# --- datasets ---------------------------------------------------------------------------------


def test_the_owner_registers_a_dataset_through_the_api(world, patients_csv):
    response = new_dataset(factories.api(world.alice), patients_csv)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["qualified_name"] == "charite.patients"
    assert body["jurisdiction"] == "EU"
    assert body["latest_version"]["number"] == 1
    assert body["latest_version"]["row_count"] == 200
    version = DatasetVersion.objects.get(dataset__organization=world.charite)
    assert version.created_by == world.alice
    assert stored_file(version).is_relative_to(settings.STORAGE_ROOT / "eu")
    assert AnalysisPolicy.objects.get(dataset=version.dataset).version == 1
    assert list(Path(settings.FILE_UPLOAD_TEMP_DIR).iterdir()) == []
    [event] = [e for e in events_of(PLATFORM_LOG) if e["type"] == "dataset.registered"]
    assert event["actor"] == f"user:{world.alice.pk}"
    assert event["subject"] == f"dataset:{version.dataset_id}"


def test_the_owner_lists_and_reads_their_datasets(world, patients):
    client = factories.api(world.alice)
    assert [d["qualified_name"] for d in results(client.get("/api/datasets/"))] == [
        "charite.patients"
    ]
    detail = client.get(DATASET).json()
    assert detail["organization"] == "charite"
    columns = {c["name"]: c for c in detail["latest_version"]["columns"]}
    assert columns["sex"]["domain"] == ["F", "M"]
    assert Decimal(columns["cost"]["upper"]) == 100000
    assert columns["person_hash"]["role"] == "join_key"


def test_the_owner_adds_a_version_and_the_first_is_kept(world, patients, tmp_path):
    second = factories.patients_csv(tmp_path / "second.csv", rows=30, seed=9)
    response = upload(factories.api(world.alice), DATASET + "versions/", second)

    assert response.status_code == 201, response.content
    assert response.json()["number"] == 2
    assert response.json()["row_count"] == 30
    versions = results(factories.api(world.alice).get(DATASET + "versions/"))
    assert [v["number"] for v in versions] == [2, 1]
    assert stored_file(patients).exists()
    assert [e["type"] for e in events_of(PLATFORM_LOG)][-1] == "dataset.version_added"
    assert events_of(PLATFORM_LOG)[-1]["data"]["version"] == 2


def test_the_owner_gets_a_schema_suggestion_and_nothing_is_stored(world, patients_csv):
    before = state()
    with patients_csv.open("rb") as handle:
        response = factories.api(world.alice).post(
            "/api/datasets/infer-schema/", {"file": handle}, format="multipart"
        )
    assert response.status_code == 200, response.content
    suggestion = {c["name"]: c for c in response.json()["schema"]}
    assert response.json()["format"] == "csv"
    assert suggestion["patient_id"]["role"] == "unit"
    assert suggestion["person_hash"]["domain"] == []
    assert state() == before


def test_a_bad_file_is_refused_through_the_api_with_its_reason(world, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(factories.patients_csv(tmp_path / "p.csv", rows=3).read_text() + "1,2\n")
    before = state()
    response = new_dataset(factories.api(world.alice), bad)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_dataset"
    assert "Row 4 (line 5) has 2 fields" in response.json()["error"]["message"]
    assert state() == before


# --- who may not ------------------------------------------------------------------------------


def test_an_outsider_gets_404_for_another_organisations_dataset_and_an_empty_list(
    world, patients, tmp_path
):
    client = factories.api(world.mallory)
    before = state()
    for url in (DATASET, DATASET + "versions/", DATASET + "policy/", DATASET + "policies/"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.json()["error"] == {
            "code": "not_found",
            "message": "Not found.",
            "fields": {},
        }
    assert results(client.get("/api/datasets/")) == []
    assert upload(client, DATASET + "versions/", patients_csv_copy(tmp_path)).status_code == 404
    assert client.put(DATASET + "policy/", {"min_group_size": 1}, format="json").status_code == 404
    assert state() == before


def patients_csv_copy(tmp_path: Path) -> Path:
    return factories.patients_csv(tmp_path / "copy.csv", rows=20, seed=3)


def test_an_outsider_cannot_upload_into_an_organisation_they_are_not_in(world, tmp_path):
    before = state()
    response = new_dataset(factories.api(world.mallory), patients_csv_copy(tmp_path))
    assert response.status_code == 404
    assert state() == before


@pytest.mark.parametrize("persona", ["dave", "erin"])
def test_an_auditor_or_analyst_of_the_owning_organisation_reads_but_cannot_write(
    world, patients, erin, tmp_path, persona
):
    user = erin if persona == "erin" else world.dave
    client = factories.api(user)
    for url in READS:
        assert client.get(url).status_code == 200, url
    assert [d["qualified_name"] for d in results(client.get("/api/datasets/"))] == [
        "charite.patients"
    ]
    before = state()

    new = new_dataset(client, patients_csv_copy(tmp_path))
    version = upload(client, DATASET + "versions/", patients_csv_copy(tmp_path))
    policy = client.put(DATASET + "policy/", {"min_group_size": 1}, format="json")

    for response in (new, version, policy):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "permission_denied"
        assert "Charité Berlin" in response.json()["error"]["message"]
    assert state() == before


def test_an_analyst_cannot_register_a_dataset_for_their_own_organisation(world, tmp_path):
    before = state()
    response = new_dataset(factories.api(world.bob), patients_csv_copy(tmp_path), "pharma")
    assert response.status_code == 403
    assert "may manage datasets" in response.json()["error"]["message"]
    assert state() == before


def test_the_regulator_sees_no_organisation_dataset_or_policy_and_cannot_write(
    world, patients, tmp_path
):
    client = factories.api(world.rita)
    assert results(client.get("/api/organizations/")) == []
    assert results(client.get("/api/datasets/")) == []
    for url in (DATASET, DATASET + "versions/", DATASET + "policy/", DATASET + "policies/"):
        assert client.get(url).status_code == 404, url
    before = state()
    assert new_dataset(client, patients_csv_copy(tmp_path)).status_code == 404
    assert upload(client, DATASET + "versions/", patients_csv_copy(tmp_path)).status_code == 404
    assert client.put(DATASET + "policy/", {"min_group_size": 1}, format="json").status_code == 404
    assert state() == before


def test_a_room_partner_reads_a_contributed_datasets_metadata_but_cannot_change_it(
    world, patients, tmp_path
):
    room = world.room()
    [invitation] = room.memberships.filter(organization=world.zurich)
    respond_to_invitation(membership=invitation, accept=True, by=world.carol)
    contribute_dataset(room=room, dataset=patients.dataset, by=world.alice)
    client = factories.api(world.carol)
    assert client.get(DATASET).status_code == 200
    assert [d["qualified_name"] for d in results(client.get("/api/datasets/"))] == [
        "charite.patients"
    ]
    before = state()
    assert upload(client, DATASET + "versions/", patients_csv_copy(tmp_path)).status_code == 403
    assert client.put(DATASET + "policy/", {"min_group_size": 1}, format="json").status_code == 403
    assert state() == before


# --- policies ---------------------------------------------------------------------------------

OPEN_POLICY = {
    "allowed_join_keys": ["person_hash"],
    "allowed_dimensions": ["age_band", "sex"],
    "allowed_measures": ["cost"],
    "allowed_filters": ["diagnosis"],
    "allowed_aggregates": ["count", "sum"],
    "allowed_mechanisms": ["mpc"],
    "allowed_receivers": ["pharma"],
    "min_group_size": 20,
    "max_epsilon_per_query": "0.5",
    "total_epsilon": "3",
}


def test_a_new_dataset_starts_with_a_closed_policy(world, patients):
    policy = factories.api(world.alice).get(DATASET + "policy/").json()
    assert policy["version"] == 1
    for allowance in (
        "allowed_join_keys",
        "allowed_dimensions",
        "allowed_measures",
        "allowed_aggregates",
        "allowed_mechanisms",
        "allowed_receivers",
    ):
        assert policy[allowance] == []


def test_putting_a_policy_writes_a_new_version_and_keeps_the_old_one(world, patients):
    client = factories.api(world.alice)
    response = client.put(DATASET + "policy/", OPEN_POLICY, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["version"] == 2
    assert body["allowed_receivers"] == ["pharma"]
    assert Decimal(body["max_epsilon_per_query"]) == Decimal("0.5")
    old, new = AnalysisPolicy.objects.filter(dataset=patients.dataset).order_by("version")
    assert (old.version, old.allowed_join_keys, old.total_epsilon) == (1, [], Decimal(5))
    assert (new.version, new.allowed_join_keys, new.total_epsilon) == (
        2,
        ["person_hash"],
        Decimal(3),
    )
    assert list(new.allowed_receivers.all()) == [world.pharma]
    assert [p["version"] for p in results(client.get(DATASET + "policies/"))] == [2, 1]
    assert client.get(DATASET + "policy/").json()["version"] == 2

    event = events_of(PLATFORM_LOG)[-1]
    assert event["type"] == "policy.changed"
    assert event["actor"] == f"user:{world.alice.pk}"
    assert event["subject"] == f"dataset:{patients.dataset_id}"
    assert event["data"]["version"] == 2
    assert event["data"]["allowed_measures"] == ["cost"]
    assert event["data"]["max_epsilon_per_query"] == "0.5000"
    assert event["data"]["allowed_receivers"] == [f"org:{world.pharma.pk}"]


def test_a_partial_put_changes_only_what_it_names(world, patients):
    client = factories.api(world.alice)
    client.put(DATASET + "policy/", OPEN_POLICY, format="json")
    response = client.put(DATASET + "policy/", {"min_group_size": 50}, format="json")
    assert response.json()["version"] == 3
    assert response.json()["min_group_size"] == 50
    assert response.json()["allowed_join_keys"] == ["person_hash"]
    assert response.json()["allowed_receivers"] == ["pharma"]


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ({"allowed_join_keys": ["cost"]}, "invalid_policy", "'cost' is a measure column"),
        ({"allowed_measures": ["sex"]}, "invalid_policy", "'sex' is a dimension column"),
        ({"allowed_dimensions": ["ward"]}, "invalid_policy", "no column called 'ward'"),
        ({"allowed_filters": ["person_hash"]}, "invalid_policy", "is a join_key column"),
        (
            {"max_epsilon_per_query": "6", "total_epsilon": "5"},
            "invalid_policy",
            "cannot exceed the total budget",
        ),
        ({"max_epsilon_per_query": "0"}, "invalid_policy", "must be positive"),
        ({"total_delta": "1"}, "invalid_policy", "Delta must be at least 0 and below 1"),
        ({"allowed_aggregates": ["median"]}, "invalid", "not a valid choice"),
        ({"allowed_receivers": ["nobody"]}, "invalid", "slug=nobody does not exist"),
        ({"min_group_size": 0}, "invalid", "greater than or equal to 1"),
    ],
)
def test_an_invalid_policy_is_refused_and_nothing_changes(world, patients, change, code, words):
    before = state()
    response = factories.api(world.alice).put(DATASET + "policy/", change, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert words in response.json()["error"]["message"]
    assert state() == before
    assert "policy.changed" not in [e["type"] for e in events_of(PLATFORM_LOG)]


# --- no rows, ever ----------------------------------------------------------------------------


def test_no_endpoint_ever_returns_a_row_value(world, patients, patients_csv, erin):
    services.update_policy(
        dataset=patients.dataset,
        by=world.alice,
        allowed_join_keys=["person_hash"],
        allowed_measures=["cost"],
    )
    room = world.room()
    contribute_dataset(room=room, dataset=patients.dataset, by=world.alice)
    rows = pl.read_csv(patients_csv)
    secrets = [*rows["person_hash"], *(f"{c:.2f}" for c in rows["cost"] if c >= 1000)]
    assert len(secrets) > 300

    bodies = []
    for user in (world.alice, world.carol, world.dave, erin, world.mallory, world.rita):
        client = factories.api(user)
        for url in [*READS, "/api/rooms/", f"/api/rooms/{room.slug}/"]:
            bodies.append(client.get(url).content.decode())
    with patients_csv.open("rb") as handle:
        bodies.append(
            factories.api(world.alice)
            .post("/api/datasets/infer-schema/", {"file": handle}, format="multipart")
            .content.decode()
        )
    everything = "\n".join(bodies)
    assert "charite.patients" in everything
    assert [s for s in secrets if s in everything] == []


# --- the schema and its reference ------------------------------------------------------------


def test_the_openapi_schema_lists_every_parties_endpoint(db):
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == "Clean room API"
    paths = schema["paths"]
    for path, methods in {
        "/api/organizations/": {"get"},
        "/api/jurisdictions/": {"get"},
        "/api/sites/": {"get"},
        "/api/datasets/": {"get", "post"},
        "/api/datasets/infer-schema/": {"post"},
        "/api/datasets/{org}/{slug}/": {"get"},
        "/api/datasets/{org}/{slug}/versions/": {"get", "post"},
        "/api/datasets/{org}/{slug}/policy/": {"get", "put"},
        "/api/datasets/{org}/{slug}/policies/": {"get"},
    }.items():
        assert methods <= set(paths[path]), path
    upload_body = paths["/api/datasets/"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload_body
    assert "tokenAuth" in schema["components"]["securitySchemes"]


def test_the_api_reference_page_renders(db):
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger-ui" in response.content
    # Its start-up script, a file of its own, points Swagger UI at the schema.
    assert b"/api/schema/" in APIClient().get("/api/docs/", {"script": ""}).content
