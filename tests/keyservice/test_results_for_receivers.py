"""Results for receivers only, with the receivers' own key services (separate processes, their
own SoftHSM2 tokens): a released result's key is sealed to each receiver's results key; only
that organisation's service opens it, logging the reader; another organisation's service, the
platform's key folder and its database open nothing."""

from __future__ import annotations

import json

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings

from cleanroom.crypto.sealing import open_received
from jobs.demo.key_services import owner_key_services
from jobs.models import Job, ResultKey
from jobs.queries.services import plan_for
from jobs.results.release import release_result
from jobs.results.storage import _key_context, _result_aad, read_result
from keyservice.release import Refused
from keyservice.service import RESULTS
from parties.keys import KeyServiceAccess, owner_key_service
from tests.factories import api, propose

pytestmark = pytest.mark.django_db

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
TABLE = {"columns": ["sex", "count"], "rows": [["F", 412.7], ["M", 398.1]]}


@pytest.fixture
def services(world, tmp_path, settings):
    settings.VAR_DIR = tmp_path / "var"
    settings.KEY_SERVICE_CALLER_KEY = tmp_path / "caller.key"
    with owner_key_services([world.charite, world.zurich, world.pharma]) as urls:
        yield urls


@pytest.fixture
def released(world, tmp_path, services):
    """A result released to NovaPharm, the query's only receiver."""
    room = world.study(tmp_path)
    query = propose(room, world.bob, world.pharma)
    job = Job.objects.create(
        query=query, mechanism="tee", state=Job.State.RUNNING, created_by=world.bob
    )
    return release_result(job.pk, TABLE)


def service_of(organization):
    return owner_key_service(organization, KeyServiceAccess.from_settings(settings))


def test_a_receivers_service_opens_its_result_and_logs_who_read_it(world, released, settings):
    assert read_result(released, world.pharma, world.bob) == TABLE
    log = settings.VAR_DIR / "keyservices" / world.pharma.slug / "decisions.jsonl"
    [entry] = [d for d in map(json.loads, log.read_text().splitlines()) if "opened" in d]
    assert entry["operation"] == "open" and entry["opened"] is True
    assert entry["reader"] == f"bob@{world.pharma.slug}"
    assert f"job:{released.job_id}" in entry["context"]


def test_another_organisations_key_service_cannot_open_it(world, released, settings):
    sealed = bytes(ResultKey.objects.get(result=released, organization=world.pharma).wrapped_key)
    context = _key_context(released.job_id, world.pharma)
    charite = service_of(world.charite)
    charite.receiving_key(RESULTS)  # Charité receives results of its own elsewhere
    with pytest.raises(Refused, match="not sealed"):
        charite.open_received(RESULTS, sealed, context=context, reader="alice")
    log = settings.VAR_DIR / "keyservices" / world.charite.slug / "decisions.jsonl"
    [entry] = [d for d in map(json.loads, log.read_text().splitlines()) if "opened" in d]
    assert entry["opened"] is False and entry["reader"] == "alice"
    # Nor is there a wrapped key for an organisation that is not a receiver.
    with pytest.raises(ResultKey.DoesNotExist):
        read_result(released, world.charite, world.alice)


def test_the_platforms_key_folder_and_database_hold_nothing_that_opens_it(
    world, released, settings
):
    """The operator tries every key file it can read as a P-256 scalar and as an AES key."""
    sealed = bytes(ResultKey.objects.get(result=released, organization=world.pharma).wrapped_key)
    context = _key_context(released.job_id, world.pharma)
    files = [p for p in settings.KEY_SERVICE_ROOT.rglob("*") if p.is_file()]
    for path in files:
        material = path.read_bytes()[:32]
        if len(material) < 32:
            continue
        scalar = int.from_bytes(material) % P256_ORDER or 1
        private = ec.derive_private_key(scalar, ec.SECP256R1())
        with pytest.raises(InvalidTag):
            open_received(
                lambda peer, k=private: k.exchange(
                    ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), peer)
                ),
                sealed,
                context=context,
            )
        with pytest.raises(InvalidTag):
            ciphertext = bytes(released.ciphertext)
            aad = _result_aad(released.job_id)
            AESGCM(material).decrypt(ciphertext[:12], ciphertext[12:], aad)
    # Every organisation here runs its own key service (one that runs none is refused uploads),
    # so the folder may hold no key file at all; whatever it holds opens nothing, and none of it
    # is a receiving key.
    assert not [p for p in files if p.name.startswith("rcv-")]
    assert bytes(released.ciphertext).find(b"412.7") == -1


def test_a_query_cannot_name_a_receiver_without_its_own_key_service(world, tmp_path, settings):
    """Where organisations run their own key services, a result is never sealed to a key the
    platform holds for a receiver that runs none."""
    room = world.study(tmp_path)
    query = propose(room, world.bob, world.pharma, submit=False)
    settings.KEY_SERVICES = {"charite": "http://127.0.0.1:9"}
    [refusal] = [c for c in plan_for(query).failed() if c.name == "receivers"]
    assert "runs no key service of its own" in refusal.message
    settings.KEY_SERVICES = {"charite": "http://127.0.0.1:9", world.pharma.slug: "http://x:9"}
    assert not [c for c in plan_for(query).failed() if c.name == "receivers"]


def test_the_result_api_asks_the_receivers_service_once_per_request(world, released, settings):
    """The table and its opening come from one opening of the result key: the receiver's log
    names its reader once per request, not once per field."""
    room = released.job.query.room
    response = api(world.bob).get(f"/api/rooms/{room.slug}/jobs/{released.job_id}/result/")
    assert response.status_code == 200 and response.json()["table"] == TABLE
    log = settings.VAR_DIR / "keyservices" / world.pharma.slug / "decisions.jsonl"
    assert len([d for d in map(json.loads, log.read_text().splitlines()) if "opened" in d]) == 1
