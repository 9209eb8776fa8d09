"""Machine approvals: an organisation registers the public half of an Ed25519 key it holds
itself, and its automation approves through the API with the detached signature that
`python -m keyservice.approve sign` prints. The attacks on it are refused."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings

from cleanroom.audit.log import PLATFORM_LOG, events_of
from jobs.models import Approval, Query
from jobs.queries.canonical import verify_approval
from keyservice.approve import decision_body
from parties.models import ApprovalCredential
from tests.factories import api, propose

pytestmark = pytest.mark.django_db


@pytest.fixture
def study(world, tmp_path):
    return world.study(tmp_path)


def _key_file(tmp_path, name="approver.key"):
    path = tmp_path / name
    out = subprocess.run(
        [sys.executable, "-m", "keyservice.approve", "new-key", str(path)],
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(settings.BASE_DIR), "PATH": "/usr/bin:/bin"},
    )
    return path, out.stdout.strip()


def _register(world, org_slug, public_key, user=None):
    return api(user or world.alice).post(
        f"/api/organizations/{org_slug}/credentials/",
        {"name": "CI approver", "public_key": public_key},
        format="json",
    )


def _signed(tmp_path, key, query, org, reject=False):
    argv = [
        sys.executable,
        "-m",
        "keyservice.approve",
        "sign",
        str(key),
        "--query",
        f"query:{query.pk}",
        "--digest",
        Query.objects.get(pk=query.pk).digest,
        "--organization",
        f"org:{org.pk}",
    ]
    out = subprocess.run(
        [*argv, "--reject"] if reject else argv,
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(settings.BASE_DIR), "PATH": "/usr/bin:/bin"},
    )
    return json.loads(out.stdout)


def test_an_organisation_approves_with_its_own_machine_key_through_the_api(world, study, tmp_path):
    key, public = _key_file(tmp_path)
    registered = _register(world, "charite", public)
    assert registered.status_code == 201, registered.json()
    assert registered.json()["kind"] == "machine-key"
    event = events_of(PLATFORM_LOG)[-1]
    assert event["type"] == "machine_key.registered"
    assert event["data"]["credential"]["public_key"] == public

    query = propose(study, world.bob, world.pharma)
    url = f"/api/rooms/{study.slug}/queries/{query.pk}/approve/"
    response = api(world.alice).post(url, _signed(tmp_path, key, query, world.charite), "json")
    assert response.status_code == 201, response.json()
    assert response.json()["credential"] == {
        "kind": "machine-key",
        "name": "CI approver",
        "holder": "",
    }
    approval = Approval.objects.get(query=query, organization=world.charite)
    assert approval.evidence["kind"] == "machine-key" and verify_approval(approval)


def test_a_machine_key_signature_for_another_decision_or_query_is_refused(world, study, tmp_path):
    key, public = _key_file(tmp_path)
    _register(world, "charite", public)
    query = propose(study, world.bob, world.pharma)
    other = propose(study, world.bob, world.pharma, title="Another")
    url = f"/api/rooms/{study.slug}/queries/{query.pk}"
    for body, where in (
        (_signed(tmp_path, key, query, world.charite, reject=True), "approve"),
        (_signed(tmp_path, key, other, world.charite), "approve"),
        (_signed(tmp_path, key, query, world.zurich), "approve"),
    ):
        response = api(world.alice).post(f"{url}/{where}/", body, format="json")
        assert response.status_code == 400, response.json()
        assert "machine key's signature" in response.json()["error"]["message"]
    assert not query.approvals.exists()


def test_another_organisations_machine_key_cannot_approve_for_this_one(world, study, tmp_path):
    key, public = _key_file(tmp_path)
    assert _register(world, "usz", public, world.carol).status_code == 201
    query = propose(study, world.bob, world.pharma)
    body = _signed(tmp_path, key, query, world.charite)
    url = f"/api/rooms/{study.slug}/queries/{query.pk}/approve/"
    response = api(world.alice).post(url, body, format="json")
    assert response.status_code == 400
    assert "decides for University Hospital Zurich" in response.json()["error"]["message"]
    assert not query.approvals.exists()


def test_a_tampered_machine_signature_and_an_unregistered_key_are_refused(world, study, tmp_path):
    key, public = _key_file(tmp_path)
    _register(world, "charite", public)
    query = propose(study, world.bob, world.pharma)
    url = f"/api/rooms/{study.slug}/queries/{query.pk}/approve/"
    body = _signed(tmp_path, key, query, world.charite)
    raw = bytearray(base64.b64decode(body["assertion"]["signature"]))
    raw[0] ^= 1
    body["assertion"]["signature"] = base64.b64encode(bytes(raw)).decode()
    assert api(world.alice).post(url, body, format="json").status_code == 400
    stranger, _ = _key_file(tmp_path, "stranger.key")
    unregistered = _signed(tmp_path, stranger, query, world.charite)
    response = api(world.alice).post(url, unregistered, format="json")
    assert response.json()["error"]["code"] == "unknown_credential"
    assert not query.approvals.exists()


def test_only_an_owner_registers_a_machine_key_and_only_a_valid_one(world, tmp_path):
    _, public = _key_file(tmp_path)
    assert _register(world, "charite", public, world.dave).status_code == 403
    assert _register(world, "charite", public, world.mallory).status_code == 404
    assert _register(world, "charite", base64.b64encode(b"short").decode()).status_code == 400
    assert not world.charite.approval_credentials.exists()


def test_a_removed_machine_key_no_longer_approves(world, study, tmp_path):
    key, public = _key_file(tmp_path)
    credential = _register(world, "charite", public).json()
    removed = api(world.alice).post(
        f"/api/organizations/charite/credentials/{credential['id']}/remove/"
    )
    assert removed.status_code == 200 and removed.json()["removed_at"]
    assert events_of(PLATFORM_LOG)[-1]["type"] == "machine_key.removed"
    query = propose(study, world.bob, world.pharma)
    body = decision_body(
        Ed25519PrivateKey.from_private_bytes(key.read_bytes()),
        query=f"query:{query.pk}",
        digest=Query.objects.get(pk=query.pk).digest,
        organization=f"org:{world.charite.pk}",
        approve=True,
    )
    url = f"/api/rooms/{study.slug}/queries/{query.pk}/approve/"
    assert api(world.alice).post(url, body, format="json").json()["error"]["code"] == (
        "unknown_credential"
    )


def test_a_public_key_that_is_not_ascii_is_refused_not_an_error(world):
    """Found by schemathesis: non-ASCII text is not base64 either (400, nothing stored)."""
    response = api(world.alice).post(
        "/api/organizations/charite/credentials/",
        {"name": "Pipeline", "public_key": "clé-publique"},
        format="json",
    )
    assert response.status_code == 400
    assert not ApprovalCredential.objects.filter(name="Pipeline").exists()
