"""The owner's kill switch for its participation in one room: an owner of a member organisation
suspends it, and from that moment none of its datasets plans, runs or gets a key in that room
(its own key service refuses too, asked directly), running jobs of the room that read them fail
closed, the same datasets keep working in other rooms, and only the organisation lifts it."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from django.core.exceptions import PermissionDenied
from django.test import Client

from cleanroom.audit.log import events_of, room_log_name
from cleanroom.audit.verifier.rules import VerificationError, check_domain_rules
from cleanroom.crypto.keys import key_service
from jobs.engines.base import EngineError
from jobs.engines.tee import trust
from jobs.execution.lifecycle import run_query, start_attempt
from jobs.models import BudgetEntry, Job, Room, RoomMembership
from jobs.queries.services import QueryRefused, plan_for
from jobs.rooms.services import (
    contribute_dataset,
    create_room,
    invite_organization,
    lift_participation_suspension,
    respond_to_invitation,
    suspend_participation,
)
from keyservice.release import Refused, ReleaseLog, SiteKeyRequest
from keyservice.service import OrganizationKeyService
from parties.keys import embedded_pinned
from tests.engines.support import order_of, tee_config
from tests.engines.support import tee_engine as tee_engine_of_worker
from tests.factories import api
from tests.jobs.test_key_release import SITE, approved, document
from tests.keyservice.support import release_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def enclave_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def charite_in(room: Room) -> RoomMembership:
    return room.memberships.get(organization__slug="charite")


def charite_keys(world, tmp_path) -> OrganizationKeyService:
    """Charité's key service deciding for itself, from what it pins (the embedded one reads
    the platform's records), with no check of the platform's before it."""
    config = tee_config()
    pinned = embedded_pinned(
        world.charite, trust.trusted_roots(config), trust.allowed_measurements(config)
    )
    return OrganizationKeyService(pinned, key_service(), ReleaseLog(tmp_path / "releases"))


def second_room(world) -> Room:
    """Another room of pharma's with the same two datasets, under the same policies."""
    room = create_room(
        organization=world.pharma, slug="follow-up", name="Follow-up", purpose="", by=world.bob
    )
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        membership = invite_organization(
            room=room, organization=org, acting_for=world.pharma, by=world.bob
        )
        respond_to_invitation(membership=membership, accept=True, by=owner)
        contribute_dataset(room=room, dataset=org.datasets.get(), by=owner)
    return room


def test_only_the_owner_organisation_suspends_or_lifts_its_participation(world, tmp_path):
    room = world.study(tmp_path)
    page = f"/rooms/{room.slug}/participation/suspension/"
    endpoint = f"/api/rooms/{room.slug}/participation/suspension/"
    # The analyst of the room's creator, Charité's own auditor, an outsider: none suspends it.
    for user in (world.bob, world.dave, world.mallory):
        assert api(user).post(endpoint).status_code in (403, 404)
        assert client_for(user).post(page, {"action": "suspend"}).status_code in (403, 404)
    assert charite_in(room).suspended_at is None

    assert api(world.alice).post(endpoint).status_code == 200
    assert charite_in(room).suspended_at is not None
    # The room's creator and its analyst try to lift it, on the page and through the API; so
    # does another member's owner (whose own participation is all it speaks for).
    for user in (world.bob, world.dave, world.mallory):
        assert api(user).delete(endpoint).status_code in (403, 404)
        assert client_for(user).post(page, {"action": "lift"}).status_code in (403, 404)
    assert api(world.carol).delete(endpoint).status_code == 409
    with pytest.raises(PermissionDenied, match="may not suspend participation"):
        lift_participation_suspension(room=room, organization=world.charite, by=world.bob)
    assert charite_in(room).suspended_at is not None

    response = client_for(world.alice).post(page, {"action": "lift"})
    assert response.status_code == 302
    assert charite_in(room).suspended_at is None
    # Both acts are in the room's log, which every member reads and every bundle carries.
    events = [e for e in events_of(room_log_name(room.pk)) if e["type"].startswith("room.part")]
    assert [e["type"] for e in events] == [
        "room.participation_suspended",
        "room.participation_resumed",
    ]
    assert {e["data"]["organization"] for e in events} == {f"org:{world.charite.pk}"}
    assert events[0]["data"]["datasets"] == [f"dataset:{world.charite.datasets.get().pk}"]
    # And every member sees it on the room's page while it holds.
    suspend_participation(room=room, organization=world.charite, by=world.alice)
    assert b"Participation suspended" in client_for(world.carol).get(f"/rooms/{room.slug}/").content


def test_a_job_after_the_suspension_is_refused_by_the_planner_and_by_the_key_service_itself(
    world, tmp_path, monkeypatch, django_capture_on_commit_callbacks, enclave_key
):
    room = world.study(tmp_path)
    monkeypatch.setenv("CLEANROOM_SITE", SITE)
    with django_capture_on_commit_callbacks(execute=False):
        job = run_query(query=approved(world, room), by=world.bob)
    query = approved(world, room)
    suspend_participation(room=room, organization=world.charite, by=world.alice)

    plan = plan_for(query)
    [check] = [c for c in plan.checks if c.name == "suspension"]
    assert not check.ok and "suspended its participation in this room" in check.message
    with pytest.raises(QueryRefused, match="suspended its participation"):
        run_query(query=query, by=world.bob)
    # A dishonest operator skips the platform's checks and asks Charité's key service itself,
    # with a genuine document and Charité's genuine approval: the service reads the room from
    # the approved form and refuses, for the enclave and for Charité's own worker site.
    charite = charite_keys(world, tmp_path)
    with pytest.raises(Refused, match=rf"suspended its participation in room:{room.pk}"):
        charite.release(release_request(job, document(job, enclave_key)))
    relayed = release_request(job, b"")
    site_key = SiteKeyRequest(
        job=job.pk,
        query=relayed.query,
        dataset=relayed.dataset,
        canonical=relayed.canonical,
        approval=relayed.approval,
        site="eu-frankfurt",
        kek_id=relayed.kek_id,
        wrapped_key=relayed.wrapped_key,
        key_context=relayed.key_context,
    )
    with pytest.raises(Refused, match="suspended its participation"):
        charite.site_key(site_key)
    # Naming another room in the form breaks Charité's approval: the room cannot be swapped.
    elsewhere = dict(relayed.canonical, room="room:999999")
    with pytest.raises(Refused, match="did not approve"):
        charite.site_key(dataclasses.replace(site_key, canonical=elsewhere))
    # Zurich's participation is Zurich's own: untouched.
    assert room.memberships.get(organization=world.zurich).suspended_at is None


def test_the_same_dataset_still_runs_in_another_room(
    world, tmp_path, monkeypatch, django_capture_on_commit_callbacks, enclave_key
):
    room = world.study(tmp_path)
    other = second_room(world)
    monkeypatch.setenv("CLEANROOM_SITE", SITE)
    suspend_participation(room=room, organization=world.charite, by=world.alice)
    with pytest.raises(QueryRefused, match="suspended its participation"):
        run_query(query=approved(world, room), by=world.bob)

    query = approved(world, other)
    assert not [c for c in plan_for(query).checks if not c.ok]
    with django_capture_on_commit_callbacks(execute=False):
        job = run_query(query=query, by=world.bob)
    job = start_attempt(job.pk, SITE)
    assert job is not None and job.state == Job.State.RUNNING
    released = charite_keys(world, tmp_path).release(
        release_request(job, document(job, enclave_key))
    )
    assert released.sealed_key
    assert len(tee_engine_of_worker().release_keys(order_of(job), document(job, enclave_key))) == 2


def test_a_queued_job_fails_closed_and_is_refunded(
    world, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    room = world.study(tmp_path)
    monkeypatch.setenv("CLEANROOM_SITE", SITE)
    with django_capture_on_commit_callbacks(execute=False):
        job = run_query(query=approved(world, room), by=world.bob)
    suspend_participation(room=room, organization=world.charite, by=world.alice)

    assert start_attempt(job.pk, SITE) is None
    job.refresh_from_db()
    assert job.state == Job.State.FAILED and "suspended its participation" in job.error
    assert job.charged_at is None
    kinds = BudgetEntry.objects.filter(query=job.query).values_list("kind", flat=True)
    assert "spend" not in kinds


def test_a_running_job_fails_closed_at_its_key_release_and_stays_charged(
    world, tmp_path, monkeypatch, django_capture_on_commit_callbacks, enclave_key
):
    room = world.study(tmp_path)
    monkeypatch.setenv("CLEANROOM_SITE", SITE)
    with django_capture_on_commit_callbacks(execute=False):
        job = run_query(query=approved(world, room), by=world.bob)
    job = start_attempt(job.pk, SITE)
    assert job.state == Job.State.RUNNING
    # Suspended while the attempt runs, after its claim, before the enclave asks for keys.
    suspend_participation(room=room, organization=world.charite, by=world.alice)

    with pytest.raises(EngineError, match="suspended its participation"):
        tee_engine_of_worker().release_keys(order_of(job), document(job, enclave_key))
    job.refresh_from_db()
    # The charge was committed before any owner was asked (from then a noisy value may exist),
    # as the ledger rules say; Charité's key did not leave.
    assert job.charged_at is not None
    released = [
        e["data"]["dataset"]
        for e in events_of(room_log_name(room.pk))
        if e["type"] == "key.released" and e["data"].get("job") == f"job:{job.pk}"
    ]
    assert f"dataset:{world.charite.datasets.get().pk}" not in released


def test_the_offline_verifier_refuses_a_log_with_a_key_released_while_suspended(
    world, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    room = world.study(tmp_path)
    monkeypatch.setenv("CLEANROOM_SITE", SITE)
    with django_capture_on_commit_callbacks(execute=False):
        job = run_query(query=approved(world, room), by=world.bob)
    suspend_participation(room=room, organization=world.charite, by=world.alice)
    log = events_of(room_log_name(room.pk))
    check_domain_rules(log, allow_simulated_tee=True)
    # What a platform that ignored the switch would have to write: Charité's key released.
    forged = {
        "type": "key.released",
        "data": {
            "job": f"job:{job.pk}",
            "dataset": f"dataset:{world.charite.datasets.get().pk}",
            "site": SITE,
        },
    }
    with pytest.raises(VerificationError, match=f"org:{world.charite.pk} was suspended"):
        check_domain_rules([*log, forged], allow_simulated_tee=True)
