"""Rooms through the REST API: who may create, invite, answer, contribute and see, and what each
change leaves in the database and in the room's audit log."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from cleanroom.audit.log import events_of, room_log_name
from cleanroom.audit.models import AuditEvent
from jobs.models import Room, RoomDataset, RoomMembership
from jobs.rooms.services import contribute_dataset, create_room, respond_to_invitation
from parties import services
from parties.models import DatasetVersion
from tests import factories

ROOM = "/api/rooms/cardio/"


@pytest.fixture
def room(world) -> Room:
    """cardio: made by charite (alice), usz invited and not yet answered."""
    return world.room()


@pytest.fixture
def charite_patients(world, patients_csv) -> DatasetVersion:
    return factories.dataset(world.charite, world.alice, patients_csv)


@pytest.fixture
def usz_patients(world, tmp_path) -> DatasetVersion:
    path = factories.patients_csv(tmp_path / "usz.csv", rows=50, seed=2)
    return factories.dataset(world.zurich, world.carol, path, jurisdiction="CH")


@pytest.fixture
def uma(world) -> User:
    """An analyst of usz."""
    uma = factories.user("uma")
    services.add_membership(organization=world.zurich, user=uma, role="analyst")
    return uma


def room_events(room: Room) -> list[dict]:
    return events_of(room_log_name(room.pk))


def statuses(room: Room) -> dict[str, str]:
    return dict(room.memberships.values_list("organization__slug", "status"))


def state() -> dict:
    return {
        "rooms": list(Room.objects.values_list("slug", flat=True)),
        "memberships": sorted(
            RoomMembership.objects.values_list("room__slug", "organization__slug", "status")
        ),
        "contributions": sorted(
            RoomDataset.objects.values_list(
                "room__slug", "dataset__slug", "version__number", "policy__version"
            )
        ),
        "audit events": AuditEvent.objects.count(),
    }


def accept(room: Room, owner: User) -> None:
    membership = room.memberships.get(
        organization__memberships__user=owner, status=RoomMembership.Status.INVITED
    )
    respond_to_invitation(membership=membership, accept=True, by=owner)


def slugs(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [r["slug"] for r in response.json()["results"]]


# --- creating ---------------------------------------------------------------------------------


def test_an_owner_creates_a_room_and_its_log_records_it(world):
    response = factories.api(world.alice).post(
        "/api/rooms/",
        {"organization": "charite", "slug": "cardio", "name": "Cardiology", "purpose": "Beds"},
        format="json",
    )

    assert response.status_code == 201, response.content
    assert response.json()["created_by_organization"] == "charite"
    assert response.json()["memberships"][0]["organization"] == "charite"
    room = Room.objects.get(slug="cardio")
    assert (room.created_by, room.created_by_organization) == (world.alice, world.charite)
    assert statuses(room) == {"charite": "active"}
    [event] = room_events(room)
    assert event["type"] == "room.created"
    assert event["log"] == f"room/{room.pk}"
    assert event["seq"] == 0
    assert event["actor"] == f"user:{world.alice.pk}"
    assert event["subject"] == f"room:{room.pk}"
    assert event["data"] == {"organization": f"org:{world.charite.pk}"}


def test_an_analyst_creates_a_room_for_their_organisation(world):
    response = factories.api(world.bob).post(
        "/api/rooms/", {"organization": "pharma", "slug": "study", "name": "Study"}, format="json"
    )
    assert response.status_code == 201
    assert statuses(Room.objects.get(slug="study")) == {"pharma": "active"}


def test_a_taken_room_name_is_refused_and_nothing_is_logged(world, room):
    before = state()
    response = factories.api(world.carol).post(
        "/api/rooms/", {"organization": "usz", "slug": "cardio", "name": "Mine"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "room_refused"
    assert "A room called 'cardio' already exists" in response.json()["error"]["message"]
    assert state() == before


@pytest.mark.parametrize(
    ("persona", "organization", "status"),
    [("dave", "charite", 403), ("rita", "charite", 404), ("mallory", "charite", 404)],
)
def test_an_auditor_the_regulator_and_an_outsider_cannot_create_a_room(
    world, persona, organization, status
):
    before = state()
    response = factories.api(getattr(world, persona)).post(
        "/api/rooms/", {"organization": organization, "slug": "x", "name": "X"}, format="json"
    )
    assert response.status_code == status
    assert state() == before


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/api/rooms/"),
        ("post", "/api/rooms/"),
        ("get", ROOM),
        ("post", ROOM + "invitations/"),
        ("post", ROOM + "accept/"),
        ("post", ROOM + "decline/"),
        ("post", ROOM + "datasets/"),
    ],
)
def test_an_anonymous_caller_gets_401(db, method, url):
    assert getattr(APIClient(), method)(url).status_code == 401


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("delete", ROOM),
        ("put", ROOM),
        ("get", ROOM + "invitations/"),
        ("get", ROOM + "accept/"),
        ("get", ROOM + "datasets/"),
        ("delete", "/api/rooms/"),
    ],
)
def test_a_wrong_method_gets_405(world, room, method, url):
    before = state()
    assert getattr(factories.api(world.alice), method)(url).status_code == 405
    assert state() == before


# --- who sees a room --------------------------------------------------------------------------


def test_members_and_invitees_see_the_room_and_others_get_404(world, room):
    for user in (world.alice, world.dave, world.carol):
        assert slugs(factories.api(user).get("/api/rooms/")) == ["cardio"]
        assert factories.api(user).get(ROOM).json()["slug"] == "cardio"
    for user in (world.bob, world.mallory, world.rita):
        assert slugs(factories.api(user).get("/api/rooms/")) == []
        response = factories.api(user).get(ROOM)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_a_room_lists_its_members_and_their_status(world, room):
    body = factories.api(world.alice).get(ROOM).json()
    assert {m["organization"]: m["status"] for m in body["memberships"]} == {
        "charite": "active",
        "usz": "invited",
    }


# --- inviting ---------------------------------------------------------------------------------


def test_an_active_member_invites_an_organisation(world, room):
    response = factories.api(world.alice).post(
        ROOM + "invitations/", {"organization": "pharma"}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "invited"
    membership = room.memberships.get(organization=world.pharma)
    assert (membership.status, membership.invited_by) == ("invited", world.alice)
    event = room_events(room)[-1]
    assert event["type"] == "room.invited"
    assert event["data"] == {"organization": f"org:{world.pharma.pk}"}
    assert slugs(factories.api(world.bob).get("/api/rooms/")) == ["cardio"]


def test_an_analyst_of_an_active_member_may_invite(world):
    study = create_room(
        organization=world.pharma, slug="study", name="Study", purpose="", by=world.bob
    )
    response = factories.api(world.bob).post(
        "/api/rooms/study/invitations/", {"organization": "usz"}, format="json"
    )
    assert response.status_code == 201
    assert statuses(study) == {"pharma": "active", "usz": "invited"}
    assert room_events(study)[-1]["actor"] == f"user:{world.bob.pk}"


@pytest.mark.parametrize(
    ("persona", "status", "words"),
    [
        ("dave", 403, "None of your organisations may invite"),
        ("carol", 403, "None of your organisations may invite"),
        ("bob", 404, "Not found"),
        ("mallory", 404, "Not found"),
        ("rita", 404, "Not found"),
    ],
)
def test_only_active_members_with_a_creating_role_may_invite(world, room, persona, status, words):
    before = state()
    response = factories.api(getattr(world, persona)).post(
        ROOM + "invitations/", {"organization": "pharma"}, format="json"
    )
    assert response.status_code == status
    assert words in response.json()["error"]["message"]
    assert state() == before


def test_someone_who_may_not_invite_cannot_probe_which_organisations_exist(world, room):
    response = factories.api(world.dave).post(
        ROOM + "invitations/", {"organization": "no-such-org"}, format="json"
    )
    assert response.status_code == 403
    response = factories.api(world.alice).post(
        ROOM + "invitations/", {"organization": "no-such-org"}, format="json"
    )
    assert response.status_code == 400
    assert "No organisation with that name exists" in response.json()["error"]["message"]


def test_inviting_an_organisation_twice_is_refused(world, room):
    before = state()
    response = factories.api(world.alice).post(
        ROOM + "invitations/", {"organization": "usz"}, format="json"
    )
    assert response.status_code == 409
    assert "University Hospital Zurich is already Invited" in response.json()["error"]["message"]
    assert state() == before


# --- answering --------------------------------------------------------------------------------


def test_the_invited_owner_accepts(world, room):
    response = factories.api(world.carol).post(ROOM + "accept/", {}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "active"
    membership = room.memberships.get(organization=world.zurich)
    assert (membership.status, membership.responded_by) == ("active", world.carol)
    assert membership.responded_at is not None
    event = room_events(room)[-1]
    assert event["type"] == "room.joined"
    assert event["actor"] == f"user:{world.carol.pk}"
    assert event["data"] == {"organization": f"org:{world.zurich.pk}"}


def test_the_invited_owner_declines_and_no_longer_sees_the_room(world, room):
    response = factories.api(world.carol).post(
        ROOM + "decline/", {"organization": "usz"}, format="json"
    )
    assert response.status_code == 200
    assert statuses(room)["usz"] == "declined"
    assert room_events(room)[-1]["type"] == "room.declined"
    assert slugs(factories.api(world.carol).get("/api/rooms/")) == []
    assert factories.api(world.carol).get(ROOM).status_code == 404


def test_a_declined_organisation_can_be_invited_again(world, room):
    factories.api(world.carol).post(ROOM + "decline/", {}, format="json")
    response = factories.api(world.alice).post(
        ROOM + "invitations/", {"organization": "usz"}, format="json"
    )
    assert response.status_code == 201
    assert statuses(room)["usz"] == "invited"


@pytest.mark.parametrize("answer", ["accept", "decline"])
def test_an_analyst_of_the_invited_organisation_cannot_answer(world, room, uma, answer):
    before = state()
    for body in ({}, {"organization": "usz"}):
        response = factories.api(uma).post(ROOM + f"{answer}/", body, format="json")
        assert response.status_code == 403
    assert statuses(room)["usz"] == "invited"
    assert state() == before


@pytest.mark.parametrize(
    ("persona", "unnamed", "named"),
    [
        ("mallory", 404, 404),
        ("bob", 404, 404),
        ("rita", 404, 404),
        ("alice", 403, 404),
        ("dave", 403, 404),
    ],
)
def test_no_other_organisation_can_answer_the_invitation(world, room, persona, unnamed, named):
    client = factories.api(getattr(world, persona))
    before = state()
    assert client.post(ROOM + "accept/", {}, format="json").status_code == unnamed
    assert client.post(ROOM + "accept/", {"organization": "usz"}, format="json").status_code == (
        named
    )
    assert client.post(ROOM + "decline/", {}, format="json").status_code == unnamed
    assert statuses(room)["usz"] == "invited"
    assert state() == before


def test_accepting_twice_is_refused(world, room):
    client = factories.api(world.carol)
    assert client.post(ROOM + "accept/", {}, format="json").status_code == 200
    after_first = state()

    again = client.post(ROOM + "accept/", {}, format="json")
    named = client.post(ROOM + "accept/", {"organization": "usz"}, format="json")
    declined = client.post(ROOM + "decline/", {"organization": "usz"}, format="json")

    assert [again.status_code, named.status_code, declined.status_code] == [403, 409, 409]
    assert named.json()["error"]["code"] == "already_answered"
    assert statuses(room)["usz"] == "active"
    assert state() == after_first
    assert [e["type"] for e in room_events(room)].count("room.joined") == 1


# --- contributing -----------------------------------------------------------------------------


def contribute(user: User, dataset: str, **extra):
    return factories.api(user).post(
        ROOM + "datasets/", {"dataset": dataset, **extra}, format="json"
    )


def test_an_owner_contributes_a_dataset_under_its_current_policy(world, room, charite_patients):
    dataset = charite_patients.dataset
    services.update_policy(dataset=dataset, by=world.alice, allowed_join_keys=["person_hash"])

    response = contribute(world.alice, "charite.patients")

    assert response.status_code == 201, response.content
    assert response.json() == {
        **response.json(),
        "dataset": "charite.patients",
        "jurisdiction": "EU",
        "version": 1,
        "policy_version": 2,
    }
    contribution = RoomDataset.objects.get(room=room, dataset=dataset)
    assert (contribution.version, contribution.policy.version) == (charite_patients, 2)
    assert contribution.contributed_by == world.alice
    event = room_events(room)[-1]
    assert event["type"] == "room.dataset_contributed"
    assert event["data"]["dataset"] == f"dataset:{dataset.pk}"
    assert (event["data"]["version"], event["data"]["policy_version"]) == (1, 2)
    assert event["data"]["jurisdiction"] == "EU"
    assert [c["dataset"] for c in factories.api(world.carol).get(ROOM).json()["contributions"]] == [
        "charite.patients"
    ]


def test_a_later_policy_change_does_not_move_the_pinned_policy_until_recontributed(
    world, room, charite_patients, tmp_path
):
    dataset = charite_patients.dataset
    contribute(world.alice, "charite.patients")
    services.update_policy(dataset=dataset, by=world.alice, min_group_size=25)
    second = factories.patients_csv(tmp_path / "v2.csv", rows=40, seed=5)
    services.add_dataset_version(
        dataset=dataset,
        upload=second,
        filename=second.name,
        schema=factories.patients_schema(),
        by=world.alice,
    )
    pinned = RoomDataset.objects.get(room=room, dataset=dataset)
    assert (pinned.version.number, pinned.policy.version) == (1, 1)

    response = contribute(world.alice, "charite.patients")

    assert response.status_code == 201
    assert (response.json()["version"], response.json()["policy_version"]) == (2, 2)
    [replaced] = RoomDataset.objects.filter(room=room, dataset=dataset)
    assert (replaced.version.number, replaced.policy.version) == (2, 2)
    contributed = [e for e in room_events(room) if e["type"] == "room.dataset_contributed"]
    assert [(e["data"]["version"], e["data"]["policy_version"]) for e in contributed] == [
        (1, 1),
        (2, 2),
    ]


def test_an_owner_may_pin_an_earlier_version(world, room, charite_patients, tmp_path):
    second = factories.patients_csv(tmp_path / "v2.csv", rows=40, seed=5)
    services.add_dataset_version(
        dataset=charite_patients.dataset,
        upload=second,
        filename=second.name,
        schema=factories.patients_schema(),
        by=world.alice,
    )
    assert contribute(world.alice, "charite.patients", version=1).json()["version"] == 1
    assert contribute(world.alice, "charite.patients", version=9).status_code == 404
    assert RoomDataset.objects.get(room=room).version.number == 1


def test_an_invited_but_not_yet_active_organisation_cannot_contribute(world, room, usz_patients):
    before = state()
    response = contribute(world.carol, "usz.patients")
    assert response.status_code == 403
    assert "None of your organisations may contribute" in response.json()["error"]["message"]
    assert state() == before
    accept(room, world.carol)
    assert contribute(world.carol, "usz.patients").status_code == 201


def test_a_dataset_of_an_organisation_not_in_the_room_is_refused(world, room, tmp_path):
    labs = factories.organization("labs", "Charité Labs", alice="owner")
    path = factories.patients_csv(tmp_path / "labs.csv", rows=20, seed=4)
    factories.dataset(labs, world.alice, path, slug="assays")
    before = state()
    response = contribute(world.alice, "labs.assays")
    assert response.status_code == 403
    assert "Charité Labs may not contribute" in response.json()["error"]["message"]
    assert state() == before


def test_only_the_datasets_owners_may_contribute_it(world, room, charite_patients, usz_patients):
    accept(room, world.carol)
    contribute_dataset(room=room, dataset=usz_patients.dataset, by=world.carol)
    before = state()
    # charite.patients is not in the room, so carol does not see it; alice sees usz.patients.
    assert contribute(world.carol, "charite.patients").status_code == 404
    assert contribute(world.alice, "usz.patients").status_code == 403
    assert contribute(world.dave, "charite.patients").status_code == 403
    assert state() == before


@pytest.mark.parametrize("persona", ["mallory", "rita", "bob"])
def test_someone_outside_the_room_gets_404_when_contributing(
    world, room, charite_patients, persona
):
    before = state()
    assert contribute(getattr(world, persona), "charite.patients").status_code == 404
    assert state() == before


def test_the_regulator_and_the_auditor_cannot_write_anything(world, room, charite_patients):
    before = state()
    for user in (world.rita, world.dave):
        client = factories.api(user)
        codes = [
            client.post(
                "/api/rooms/", {"organization": "charite", "slug": "r", "name": "R"}, format="json"
            ).status_code,
            client.post(
                ROOM + "invitations/", {"organization": "pharma"}, format="json"
            ).status_code,
            client.post(ROOM + "accept/", {}, format="json").status_code,
            client.post(ROOM + "decline/", {}, format="json").status_code,
            contribute(user, "charite.patients").status_code,
        ]
        assert all(code in {403, 404} for code in codes), codes
    assert state() == before
