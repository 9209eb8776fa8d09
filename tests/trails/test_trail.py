"""Each party's trail, in the UI and the API, with verified marks from real inclusion proofs."""

from __future__ import annotations

import base64

import pytest
from django.db import connection, transaction
from django.urls import reverse

from cleanroom.audit import checkpoints
from cleanroom.audit.log import PLATFORM_LOG, record_event, room_log_name
from cleanroom.audit.models import AuditEvent
from cleanroom.audit.verifier.merkle import leaf_hash, verify_consistency, verify_inclusion
from cleanroom.audit.verifier.notes import verify_checkpoint
from jobs.rooms.services import invite_organization, respond_to_invitation
from parties import services as party_services
from tests import factories
from tests.audit.tampering import tamper

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def sign_only_when_asked(settings):
    settings.AUDIT_CHECKPOINT_SIGNING = "off"


@pytest.fixture
def cardio(world):
    """charite's room, usz invited (not yet answered), pharma joined (its owner nina accepted
    for it); all logs signed."""
    room = world.room()
    membership = invite_organization(
        room=room, organization=world.pharma, acting_for=world.charite, by=world.alice
    )
    nina = factories.user("nina")
    party_services.add_membership(organization=world.pharma, user=nina, role="owner")
    respond_to_invitation(membership=membership, accept=True, by=nina)
    checkpoints.sign_all()
    return room


def trail(client, user, **params):
    client.force_login(user)
    return client.get(reverse("audit-trail"), params)


def api_events(user, **params):
    return factories.api(user).get("/api/audit/events/", params)


def subjects(response) -> set[str]:
    return {e["event"]["subject"] for e in response.json()["results"]}


def types(response) -> list[str]:
    return [e["type"] for e in response.json()["results"]]


def test_an_owner_sees_her_rooms_and_her_organisations_platform_events_all_verified(
    client, world, cardio
) -> None:
    response = trail(client, world.alice)
    assert response.status_code == 200
    rows = response.context["rows"]
    logs = {row["proven"].event.log.name for row in rows}
    assert logs == {PLATFORM_LOG, room_log_name(cardio.pk)}
    platform = {row["proven"].body["subject"] for row in rows if row["room"] is None}
    assert platform == {f"org:{world.charite.pk}"}  # not usz's, pharma's or mallory's
    assert {row["proven"].status for row in rows} == {"verified"}
    html = response.content.decode()
    assert html.count("✓ verified") == len(rows)
    assert "Cardiology outcomes" in html


def test_the_auditor_reads_the_same_trail_as_the_owner(client, world, cardio) -> None:
    owner = [r["proven"].event.pk for r in trail(client, world.alice).context["rows"]]
    auditor = [r["proven"].event.pk for r in trail(client, world.dave).context["rows"]]
    assert owner == auditor


def test_an_analyst_reads_his_rooms_but_not_his_organisations_platform_record(
    world, cardio
) -> None:
    response = api_events(world.bob)
    assert response.status_code == 200
    assert {e["log"] for e in response.json()["results"]} == {room_log_name(cardio.pk)}


def test_an_invited_organisation_reads_the_room_only_once_it_has_joined(world, cardio) -> None:
    assert room_log_name(cardio.pk) not in {
        e["log"] for e in api_events(world.carol).json()["results"]
    }
    membership = cardio.memberships.get(organization=world.zurich)
    respond_to_invitation(membership=membership, accept=True, by=world.carol)
    assert room_log_name(cardio.pk) in {e["log"] for e in api_events(world.carol).json()["results"]}


def test_an_outsider_sees_nothing_of_the_room_and_gets_404_for_its_log(world, cardio) -> None:
    response = api_events(world.mallory)
    assert {e["log"] for e in response.json()["results"]} == {PLATFORM_LOG}
    assert subjects(response) == {f"org:{world.outsider.pk}"}
    log = room_log_name(cardio.pk)
    client = factories.api(world.mallory)
    assert client.get("/api/audit/checkpoints/", {"log": log}).status_code == 404
    assert client.get("/api/audit/events/", {"room": cardio.slug}).json()["results"] == []


def test_a_regulator_reads_no_trail_and_is_sent_to_the_bundles(client, world, cardio) -> None:
    response = trail(client, world.rita)
    assert response.status_code == 302
    assert response["Location"] == reverse("audit-bundles")
    api = api_events(world.rita)
    assert api.status_code == 403
    assert api.json()["error"]["message"].startswith("Regulators download bundles")


def test_each_api_event_carries_a_proof_the_caller_can_check_against_the_log_key(
    world, cardio
) -> None:
    vkeys = checkpoints.log_vkeys()
    results = api_events(world.dave).json()["results"]
    assert results
    for event in results:
        checkpoint, _ = verify_checkpoint(
            event["checkpoint"], vkeys, origin=f"cleanroom.local/{event['log']}"
        )
        canonical = base64.b64decode(event["canonical"])
        proof = [base64.b64decode(p) for p in event["inclusion_proof"]]
        verify_inclusion(
            leaf_hash(canonical), event["seq"], checkpoint.size, proof, checkpoint.root_hash
        )
        assert event["status"] == "verified"


def test_events_after_the_latest_checkpoint_are_shown_as_awaiting_one(
    client, world, cardio
) -> None:
    with transaction.atomic():
        record_event(
            log=room_log_name(cardio.pk), type="room.note", actor=None, subject=f"room:{cardio.pk}"
        )
    rows = trail(client, world.alice, room=cardio.slug).context["rows"]
    assert [r["proven"].status for r in rows][:2] == ["pending", "verified"]
    assert "awaiting checkpoint" in trail(client, world.alice).content.decode()


def test_an_event_changed_in_the_database_is_marked_failed_with_the_reason(
    client, world, cardio
) -> None:
    event = AuditEvent.objects.get(log__name=room_log_name(cardio.pk), seq=1)
    forged = bytes(event.canonical).replace(b'"room.invited"', b'"room.declined"')
    tamper(
        connection, "UPDATE audit_auditevent SET canonical = %s WHERE id = %s", [forged, event.pk]
    )
    response = trail(client, world.alice, room=cardio.slug)
    [bad] = [r["proven"] for r in response.context["rows"] if r["proven"].event.pk == event.pk]
    assert bad.status == "failed"
    assert "inclusion proof fails" in bad.reason
    assert "✗ failed" in response.content.decode()


def test_the_trail_filters_by_room_type_query_and_dataset(world, cardio) -> None:
    log = room_log_name(cardio.pk)
    with transaction.atomic():
        record_event(
            log=log,
            type="query.submitted",
            actor=None,
            subject=f"room:{cardio.pk}",
            data={"query": "query:41", "datasets": [{"dataset": "dataset:9"}]},
        )
        record_event(
            log=log,
            type="query.approved",
            actor=None,
            subject=f"room:{cardio.pk}",
            data={"query": "query:41", "organization": f"org:{world.charite.pk}"},
        )
        record_event(
            log=log,
            type="query.submitted",
            actor=None,
            subject=f"room:{cardio.pk}",
            data={"query": "query:42", "datasets": [{"dataset": "dataset:8"}]},
        )
    assert types(api_events(world.alice, query="41")) == ["query.approved", "query.submitted"]
    assert types(api_events(world.alice, query="query:42")) == ["query.submitted"]
    assert [
        e["event"]["data"]["query"] for e in api_events(world.alice, dataset="9").json()["results"]
    ] == ["query:41"]
    assert set(types(api_events(world.alice, type="room.joined"))) == {"room.joined"}
    assert {e["log"] for e in api_events(world.alice, room=cardio.slug).json()["results"]} == {log}


def test_the_trail_page_offers_its_rooms_and_types_as_filters(client, world, cardio) -> None:
    response = trail(client, world.alice, type="room.invited")
    html = response.content.decode()
    assert '<option value="cardio"' in html
    assert '<option value="room.invited" selected>' in html
    assert {r["proven"].event.type for r in response.context["rows"]} == {"room.invited"}


def test_checkpoint_and_consistency_endpoints_serve_members(world, cardio) -> None:
    log = room_log_name(cardio.pk)
    client = factories.api(world.bob)
    first = client.get("/api/audit/checkpoints/", {"log": log}).json()
    with transaction.atomic():
        record_event(log=log, type="room.note", actor=None, subject=f"room:{cardio.pk}")
    checkpoints.sign_checkpoint(log)
    second = client.get("/api/audit/checkpoints/", {"log": log}).json()
    assert second["size"] == first["size"] + 1
    proof = client.get("/api/audit/consistency/", {"log": log, "first": first["size"]}).json()
    verify_consistency(
        first["size"],
        second["size"],
        [base64.b64decode(p) for p in proof["proof"]],
        base64.b64decode(first["root_hash"]),
        base64.b64decode(second["root_hash"]),
    )
    bad = client.get("/api/audit/consistency/", {"log": log, "first": 0})
    assert bad.status_code == 400


def test_owners_and_auditors_witness_through_the_api_and_analysts_may_not(world, cardio) -> None:
    log = room_log_name(cardio.pk)
    body = {"organization": "charite", "log": log}
    response = factories.api(world.dave).post("/api/audit/witness/", body, format="json")
    assert response.status_code == 200
    assert response.json()["cosigned"] is True
    assert response.json()["checkpoint"]["cosigned_by"] == ["cleanroom.local/witness/charite"]
    analyst = factories.api(world.bob).post(
        "/api/audit/witness/", {"organization": "pharma", "log": log}, format="json"
    )
    assert analyst.status_code == 403
    outsider = factories.api(world.mallory).post(
        "/api/audit/witness/", {"organization": world.outsider.slug, "log": log}, format="json"
    )
    assert outsider.status_code == 404


def test_the_trail_endpoints_refuse_the_wrong_method(world, cardio) -> None:
    client = factories.api(world.alice)
    assert client.post("/api/audit/events/", {}).status_code == 405
    assert client.get("/api/audit/witness/").status_code == 405
