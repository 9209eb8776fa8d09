"""The log holds a salted commitment to each released result, never its hash: a member who is
not a receiver (or a regulator) reads every event and learns nothing of the result from it, even
one small enough to enumerate, while a receiver's opening checks against it offline."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from itertools import product

import pytest
from django.test import Client

from cleanroom.audit.bundles import export_bundle
from cleanroom.audit.verifier.rules import result_commitment
from jobs import tasks
from jobs.execution import outbox
from jobs.execution.lifecycle import run_query
from jobs.models import Result
from jobs.results.storage import read_result, result_opening
from tests import factories
from tests.audit.bundling import run_verify, trust_file
from tests.factories import api, propose

pytestmark = pytest.mark.django_db

SITE = "eu-frankfurt-tee"
SQL = "SELECT sex, COUNT(*) AS n FROM charite.patients GROUP BY sex"
SPREAD = 60  # each candidate count within this of the released one: 120² candidate tables


@pytest.fixture
def released(world, tmp_path, monkeypatch) -> Result:
    """A two-group COUNT released to pharma only: small enough to enumerate."""
    room = world.study(tmp_path)
    monkeypatch.setenv("CLEANROOM_SITE", SITE)
    monkeypatch.setattr(outbox, "dispatch", lambda job_id: None)
    query = propose(room, world.bob, world.pharma, sql=SQL, requested_mechanism="tee")
    factories.decide(query=query, organization=world.charite, by=world.alice, approve=True)
    query.refresh_from_db()
    job = run_query(query=query, by=world.bob)
    assert tasks.run_job(job.pk, SITE) == "released"
    return Result.objects.get(job=job)


def _plaintext(table: dict) -> bytes:
    return json.dumps(table, sort_keys=True, separators=(",", ":")).encode()


def _candidates(table: dict):
    """Every table the attacker thinks possible: the released format (the code is public),
    with each group's noisy count anywhere near the truth and its interval derived from it."""
    accuracy = next(m for m in table["measurements"] if m["name"] == "count")["accuracy95"]
    truth = [row["n"]["value"] for row in table["rows"]]
    ranges = [range(v - SPREAD, v + SPREAD) for v in truth]
    for values in product(*ranges):
        candidate = copy.deepcopy(table)
        for row, value in zip(candidate["rows"], values, strict=True):
            row["n"].update(value=value, ci95_low=value - accuracy, ci95_high=value + accuracy)
        yield _plaintext(candidate)


def test_a_non_receiver_cannot_recover_a_small_result_from_the_log(world, released):
    # Charité's owner is a member of the room but not a receiver: it reads the log.
    events = api(world.alice).get("/api/audit/events/", {"type": "result.released"}).json()
    [event] = [e["event"] for e in events["results"] if e["event"]["type"] == "result.released"]
    committed = event["data"]["result_commitment"]
    assert "result_sha256" not in event["data"]

    # What the attacker enumerates is sound: under a plain SHA-256, as the log used to hold,
    # the enumeration finds the released table.
    table = read_result(released, world.pharma, world.bob)
    plain = hashlib.sha256(_plaintext(table)).hexdigest()
    hashes = {hashlib.sha256(candidate).hexdigest() for candidate in _candidates(table)}
    assert plain in hashes
    # Under the salted commitment no candidate matches: without the salt each is as likely.
    assert committed not in hashes
    assert committed != plain


def test_the_salt_is_only_in_the_encrypted_result(world, released, tmp_path):
    salt = bytes.fromhex(result_opening(released, world.pharma, world.bob)["salt"])
    assert len(salt) == 32 and salt not in bytes(released.sealed_salt)
    bundle = tmp_path / "room.zip"
    export_bundle(room=released.job.query.room, output=bundle, by=None)
    assert salt.hex().encode() not in bundle.read_bytes()
    assert base64.b64encode(salt) not in bundle.read_bytes()


def test_a_receivers_opening_verifies_offline_and_a_forged_one_is_refused(
    world, released, tmp_path
):
    url = f"/rooms/{released.job.query.room.slug}/jobs/{released.job_id}/result/opening.json"
    client = Client()
    client.force_login(world.alice)  # a member, not a receiver
    assert client.get(url).status_code == 403
    client.force_login(world.bob)
    response = client.get(url)
    assert response.status_code == 200
    genuine = response.json()
    bundle = tmp_path / "room.zip"
    export_bundle(room=released.job.query.room, output=bundle, by=None)
    trust = trust_file(tmp_path, "allow-simulated-tee")

    path = tmp_path / "opening.json"
    path.write_text(json.dumps(genuine))
    verdict = run_verify(bundle, trust, results=(path,))
    assert verdict.ok, verdict.stderr
    assert f"the result of job:{released.job_id} you hold matches" in verdict.stdout

    table = json.loads(base64.b64decode(genuine["result"]))
    table["rows"][0]["n"]["value"] += 1
    edited = {**genuine, "result": base64.b64encode(_plaintext(table)).decode()}
    wrong_salt = {**genuine, "salt": "00" * 32}
    for forged in (edited, wrong_salt):
        path.write_text(json.dumps(forged))
        verdict = run_verify(bundle, trust, results=(path,))
        assert verdict.returncode == 1
        assert "does not match its commitment in the log" in verdict.stderr
    assert result_commitment(
        bytes.fromhex(genuine["salt"]), base64.b64decode(genuine["result"])
    ) == (released.commitment)
