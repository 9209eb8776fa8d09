"""An owner approves and rejects from the client and the command line, signing locally with the
organisation's registered machine key (`python -m keyservice.approve new-key` writes one). The
key never reaches the server; another organisation's key or an unregistered one is refused."""

from __future__ import annotations

import base64
import io

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cleanroom.audit.verifier import approvals as kernel
from cleanroom.client import ApiError, Client, signing
from cleanroom.client.cli import main
from jobs.models import Approval
from jobs.queries.canonical import verify_approval
from keyservice.approve import new_key
from tests.factories import JOIN_SQL, api, propose, token_for

pytestmark = pytest.mark.django_db(transaction=True)


def _machine_key(world, tmp_path, org_slug, owner, name="approver.key"):
    """A key file, its public half registered to `org_slug` by its owner through the API."""
    path = tmp_path / name
    public = new_key(path)
    registered = api(owner).post(
        f"/api/organizations/{org_slug}/credentials/",
        {"name": "CI approver", "public_key": public},
        format="json",
    )
    assert registered.status_code == 201, registered.json()
    return path


@pytest.fixture
def as_alice(world, live_server, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("CLEANROOM_URL", live_server.url)
    monkeypatch.setenv("CLEANROOM_TOKEN", token_for(world.alice))


def test_an_owner_approves_with_the_organisations_machine_key(world, study, live_server, tmp_path):
    key = _machine_key(world, tmp_path, "charite", world.alice)
    query = propose(study, world.bob, world.pharma, sql=JOIN_SQL)
    alice = Client(live_server.url, token_for(world.alice))

    approval = alice.approve(query.pk, "charite", key, "Fine by us", room="study")

    query.refresh_from_db()
    assert approval["decision"] == "approve" and approval["verified"] is True
    assert approval["digest"] == query.digest
    stored = Approval.objects.get(query=query, organization=world.charite)
    assert stored.comment == "Fine by us" and stored.evidence["kind"] == "machine-key"
    assert verify_approval(stored)


def test_reject_from_the_command_line(world, as_alice, study, tmp_path, capsys):
    key = _machine_key(world, tmp_path, "charite", world.alice)
    query = propose(study, world.bob, world.pharma, sql=JOIN_SQL)
    argv = ["reject", "study", str(query.pk), "--org", "charite", "--key", str(key), "--yes"]
    assert main([*argv, "--comment", "Too fine-grained"]) == 0
    shown, said = capsys.readouterr().out.split("\n\n")
    assert shown.startswith(f"Query {query.pk} in study, version 1: Stay by age band\n")
    assert said.startswith(f"Query {query.pk} rejected for charite")
    query.refresh_from_db()
    assert query.status == query.Status.REJECTED
    assert verify_approval(query.approvals.get())


def test_another_organisations_key_is_refused_with_exit_1(world, as_alice, study, tmp_path, capsys):
    """Alice, owner at Charité, signs with a key Zurich registered (which she got hold of)."""
    zurich_key = _machine_key(world, tmp_path, "usz", world.carol, "usz.key")
    query = propose(study, world.bob, world.pharma, sql=JOIN_SQL)
    argv = ["approve", "study", str(query.pk), "--org", "charite", "--key", str(zurich_key)]
    assert main([*argv, "--yes"]) == 1
    assert capsys.readouterr().err.startswith(
        "cleanroom: refused (wrong_organization): This machine key decides for "
        "University Hospital Zurich, not Charité Berlin."
    )
    assert not query.approvals.exists()


def test_an_unregistered_key_is_refused_with_exit_1(world, as_alice, study, tmp_path, capsys):
    stranger = tmp_path / "stranger.key"
    new_key(stranger)
    query = propose(study, world.bob, world.pharma, sql=JOIN_SQL)
    argv = ["approve", "study", str(query.pk), "--org", "charite", "--key", str(stranger)]
    assert main([*argv, "--yes"]) == 1
    assert capsys.readouterr().err.startswith(
        "cleanroom: refused (unknown_credential): No registered machine-key made this decision.\n"
    )
    assert not query.approvals.exists()


def test_a_key_file_that_is_not_a_machine_key_is_a_usage_error(
    world, as_alice, study, tmp_path, capsys
):
    not_a_key = tmp_path / "id_rsa.pub"
    not_a_key.write_text("ssh-ed25519 AAAA… alice@laptop\n")
    query = propose(study, world.bob, world.pharma, sql=JOIN_SQL)
    argv = ["approve", "study", str(query.pk), "--yes", "--org", "charite", "--key"]
    assert main([*argv, str(not_a_key)]) == 2
    assert "is not a machine key" in capsys.readouterr().err
    assert main([*argv, str(tmp_path / "missing.key")]) == 2
    assert not query.approvals.exists()


def test_an_organisation_the_caller_is_not_in_is_refused(world, study, live_server, tmp_path):
    key = _machine_key(world, tmp_path, "usz", world.carol)
    query = propose(study, world.bob, world.pharma, sql=JOIN_SQL)
    alice = Client(live_server.url, token_for(world.alice))
    with pytest.raises(ApiError) as refused:
        alice.approve(query.pk, "usz", key, room="study")
    assert refused.value.code == "not_a_member"
    assert not query.approvals.exists()


def test_the_clients_approval_message_and_key_id_are_the_kernels(tmp_path):
    """The client restates them (it imports no server code): they must stay byte for byte equal,
    or every signature it makes would be refused."""
    args = ("query:7", "ab" * 32, "org:3", "reject")
    assert signing.approval_message(*args) == kernel.approval_message(*args)
    public = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    assert signing.machine_key_id(public) == kernel.machine_key_id(public)
    assert signing.MACHINE_KEY == kernel.MACHINE_KEY
    assert len(base64.b64decode(signing.machine_key_assertion(
        Ed25519PrivateKey.generate(), query_id=7, digest="ab" * 32, organization_id=3,
        decision="approve")["signature"])) == 64  # fmt: skip


class Terminal(io.StringIO):
    """Standard input as a terminal an owner answers on."""

    def isatty(self) -> bool:
        return True


def test_the_command_line_asks_before_it_signs(
    world, as_alice, study, tmp_path, capsys, monkeypatch
):
    key = _machine_key(world, tmp_path, "charite", world.alice)
    query = propose(study, world.bob, world.pharma, sql=JOIN_SQL)
    argv = ["approve", "study", str(query.pk), "--org", "charite", "--key", str(key)]
    # From a script (no terminal), nothing is signed without --yes.
    assert main(argv) == 2
    assert "pass --yes to approve without being asked" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Sign 'approve' for charite over this form? [y/N] Nothing signed." in out
    assert not query.approvals.exists()
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    assert main(argv) == 0
    assert capsys.readouterr().out.endswith(f"(version digest {query.digest}).\n")
    assert query.approvals.get().decision == "approve"
