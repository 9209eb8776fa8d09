"""Bundles: the contract's layout, the offline verifier, export commands, the regulator's page."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.urls import reverse

from cleanroom.audit import checkpoints
from cleanroom.audit.bundles import export_bundle
from cleanroom.audit.log import record_event, room_log_name, store_attachment
from cleanroom.audit.models import AuditEvent
from cleanroom.audit.verification import verify_log
from cleanroom.audit.verifier import VerificationError
from cleanroom.audit.verifier.build import build_zipapp
from cleanroom.audit.verifier.bundle import manifest_note_text, parse_trust_file
from cleanroom.audit.verifier.merkle import leaf_hash, root_from_leaf_hashes
from cleanroom.audit.verifier.notes import verify_checkpoint, verify_note
from jobs.rooms.services import contribute_dataset, create_room
from tests import factories
from tests.audit.bundling import run_verify, trust_file
from tests.audit.domain import happy_run, index_of, mutate, record_run

pytestmark = pytest.mark.django_db

GOLDEN_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"

CONTRACT = {
    "MANIFEST.json",
    "MANIFEST.sig",
    "checkpoint.txt",
    "events.jsonl",
    "verify.pyz",
    "README.txt",
}


@pytest.fixture(autouse=True)
def sign_only_when_asked(settings):
    settings.AUDIT_CHECKPOINT_SIGNING = "off"


@pytest.fixture
def cardio(world):
    room = world.room()
    with transaction.atomic():
        record_event(
            log=room_log_name(room.pk),
            type="query.submitted",
            actor=f"user:{world.bob.pk}",
            subject=f"room:{room.pk}",
            data={
                "query": "query:1",
                "required_approvers": [],
                "datasets": [],
                "receivers": [],
                "digest": "d" * 64,
            },
            attach={"query.sql": b"SELECT COUNT(*) FROM charite.patients"},
        )
    return room


def drain(response) -> bytes:
    """The downloaded zip."""
    return response.content


def export(room, path, by=None):
    export_bundle(room=room, output=path, by=by)
    return path


def test_a_bundle_holds_exactly_the_contract_files_each_with_its_hash(cardio, tmp_path) -> None:
    path = export(cardio, tmp_path / "b.zip")
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        sql_sha = hashlib.sha256(b"SELECT COUNT(*) FROM charite.patients").hexdigest()
        assert names == CONTRACT | {f"attachments/{sql_sha}"}
        manifest_bytes = archive.read("MANIFEST.json")
        manifest = json.loads(manifest_bytes)
        assert manifest["format"] == "cleanroom-bundle/v1"
        assert manifest["origin"] == f"cleanroom.local/room/{cardio.pk}"
        assert manifest["tree_size"] == 3  # created, invited, submitted
        assert set(manifest["files"]) == names - {"MANIFEST.json", "MANIFEST.sig"}
        for name, sha in manifest["files"].items():
            assert hashlib.sha256(archive.read(name)).hexdigest() == sha
        lines = archive.read("events.jsonl").splitlines()
        stored = AuditEvent.objects.filter(log__name=room_log_name(cardio.pk)).order_by("seq")
        assert lines == [bytes(e.canonical) for e in stored][:3]  # the export came after
        vkeys = checkpoints.log_vkeys()
        checkpoint, _ = verify_checkpoint(archive.read("checkpoint.txt").decode(), vkeys)
        assert checkpoint.root_hash == root_from_leaf_hashes([leaf_hash(x) for x in lines])
        text, _ = verify_note(archive.read("MANIFEST.sig").decode(), vkeys)
        assert text == manifest_note_text(
            manifest["origin"], hashlib.sha256(manifest_bytes).hexdigest()
        )
        assert archive.read("verify.pyz") == build_zipapp()
        assert b"python3 bundle/verify.pyz THIS_BUNDLE.zip --trust" in archive.read("README.txt")


def test_the_shipped_verifier_accepts_a_fresh_bundle_offline(cardio, tmp_path) -> None:
    path = export(cardio, tmp_path / "b.zip")
    verdict = run_verify(path, trust_file(tmp_path))
    assert verdict.ok, verdict.stderr
    assert verdict.stdout.startswith(f"OK: cleanroom.local/room/{cardio.pk}: 3 events")
    assert "1 attachments" in verdict.stdout


def test_each_export_is_an_audit_event_that_the_next_bundle_carries(world, cardio, tmp_path):
    first = export(cardio, tmp_path / "1.zip", by=world.dave)
    second = export(cardio, tmp_path / "2.zip")
    with zipfile.ZipFile(second) as archive:
        last = json.loads(archive.read("events.jsonl").splitlines()[-1])
    assert last["type"] == "bundle.exported"
    assert last["actor"] == f"user:{world.dave.pk}"
    assert last["data"] == {"format": "cleanroom-bundle/v1", "tree_size": 3}
    # A regulator who kept the first checkpoint checks the second bundle extends it.
    saved = tmp_path / "saved-checkpoint.txt"
    with zipfile.ZipFile(first) as archive:
        saved.write_bytes(archive.read("checkpoint.txt"))
    verdict = run_verify(second, trust_file(tmp_path), previous=saved)
    assert verdict.ok, verdict.stderr
    assert "extends the previous checkpoint at size 3" in verdict.stdout


def test_witness_cosignatures_travel_in_the_bundle_and_are_checked_when_trusted(
    world, cardio, tmp_path
) -> None:
    checkpoints.sign_checkpoint(room_log_name(cardio.pk))
    call_command(
        "witness", "--org", "charite", "--log", room_log_name(cardio.pk), stdout=io.StringIO()
    )
    path = export(cardio, tmp_path / "b.zip")
    keys = io.StringIO()
    call_command("audit_keys", "--witnesses", stdout=keys)
    trust = tmp_path / "trust-with-witness.txt"
    trust.write_text(keys.getvalue())
    verdict = run_verify(path, trust)
    assert verdict.ok, verdict.stderr
    assert "cosigned by cleanroom.local/witness/charite" in verdict.stdout


def test_a_trust_file_without_any_key_or_with_a_broken_line_is_refused() -> None:
    with pytest.raises(VerificationError, match="holds no log key"):
        parse_trust_file("# nothing\nallow-simulated-tee\n")
    with pytest.raises(VerificationError, match="trust file line 2"):
        parse_trust_file(f"{GOLDEN_VKEY}\nnot a key\n")


def test_the_attachments_parameter_still_takes_hashes_of_stored_files(cardio, tmp_path) -> None:
    sha = store_attachment(b"policy v3")
    with transaction.atomic():
        event = record_event(
            log=room_log_name(cardio.pk),
            type="room.note",
            actor=None,
            subject=f"room:{cardio.pk}",
            attachments=[sha],
            attach={"evidence.cbor": b"\x01"},
        )
    assert json.loads(bytes(event.canonical))["attachments"] == sorted(
        [sha, hashlib.sha256(b"\x01").hexdigest()]
    )
    assert run_verify(export(cardio, tmp_path / "b.zip"), trust_file(tmp_path)).ok


def test_a_domain_rule_broken_in_the_log_fails_both_verifiers_naming_it(world, tmp_path) -> None:
    room = world.room("study")

    def drop_usz_approval(run):
        del run[index_of(run, "query.approved", 1)]

    record_run(room_log_name(room.pk), mutate(drop_usz_approval))
    verdict = run_verify(export(room, tmp_path / "b.zip"), trust_file(tmp_path))
    assert verdict.returncode == 1
    assert "ran query:7 without the approval of org:2" in verdict.stderr
    with pytest.raises(VerificationError, match="without the approval of org:2"):
        verify_log(room_log_name(room.pk))


def test_a_simulated_tee_passes_only_when_the_trust_file_allows_it(world, tmp_path) -> None:
    room = world.room("study")
    run = happy_run()
    run[index_of(run, "attestation.verified")][1]["kind"] = "simulated"
    record_run(room_log_name(room.pk), run)
    path = export(room, tmp_path / "b.zip")
    refused = run_verify(path, trust_file(tmp_path))
    assert refused.returncode == 1
    assert "simulated TEE" in refused.stderr
    assert run_verify(path, trust_file(tmp_path, "allow-simulated-tee", name="t2.txt")).ok
    verify_log(room_log_name(room.pk), allow_simulated_tee=True)


def test_the_export_command_writes_one_room_or_every_room(world, cardio, tmp_path) -> None:
    out = io.StringIO()
    call_command(
        "export_bundle", "--room", "cardio", "--output", str(tmp_path / "c.zip"), stdout=out
    )
    assert out.getvalue().startswith(f"cleanroom.local/room/{cardio.pk}: 3 events -> ")
    world.room("second")
    out = io.StringIO()
    call_command("export_bundle", "--all", "--output", str(tmp_path / "all"), stdout=out)
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == [
        "cardio-audit-bundle.zip",
        "second-audit-bundle.zip",
    ]
    for bundle in (tmp_path / "all").iterdir():
        assert run_verify(bundle, trust_file(tmp_path)).ok
    with pytest.raises(CommandError, match="No room 'nope'"):
        call_command("export_bundle", "--room", "nope", "--output", str(tmp_path / "x.zip"))


# -- the regulator's page and API -------------------------------------------------------------


@pytest.fixture
def eu_room(world, cardio, patients_csv):
    """cardio with charite's EU patients contributed; a second room with CH data only."""
    version = factories.dataset(world.charite, world.alice, patients_csv, jurisdiction="EU")
    contribute_dataset(room=cardio, dataset=version.dataset, by=world.alice)
    swiss = create_room(
        organization=world.zurich, slug="swiss", name="Swiss only", purpose="", by=world.carol
    )
    ch = factories.dataset(world.zurich, world.carol, patients_csv, slug="ch", jurisdiction="CH")
    contribute_dataset(room=swiss, dataset=ch.dataset, by=world.carol)
    return cardio


def test_a_regulator_sees_the_rooms_touching_its_jurisdictions_and_downloads_one(
    client, world, eu_room, tmp_path
) -> None:
    client.force_login(world.rita)
    page = client.get(reverse("audit-bundles"))
    assert page.status_code == 200
    assert [b["room"].slug for b in page.context["rooms"]] == ["cardio"]
    html = page.content.decode()
    assert "Swiss only" not in html
    assert "python3 bundle/verify.pyz ROOM-audit-bundle.zip --trust" in html
    response = client.get(reverse("audit-bundle-download", args=["cardio"]))
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment")
    path = tmp_path / "downloaded.zip"
    path.write_bytes(drain(response))
    verdict = run_verify(path, trust_file(tmp_path))
    assert verdict.ok, verdict.stderr
    last = AuditEvent.objects.filter(log__name=room_log_name(eu_room.pk)).order_by("seq").last()
    assert json.loads(bytes(last.canonical))["actor"] == f"user:{world.rita.pk}"
    assert last.type == "bundle.exported"


def test_a_regulator_gets_404_for_a_room_outside_its_jurisdictions(client, world, eu_room):
    client.force_login(world.rita)
    assert client.get(reverse("audit-bundle-download", args=["swiss"])).status_code == 404
    api = factories.api(world.rita)
    assert [b["room"] for b in api.get("/api/audit/bundles/").json()] == ["cardio"]
    assert api.get("/api/audit/bundles/swiss/").status_code == 404
    response = api.get("/api/audit/bundles/cardio/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert drain(response).startswith(b"PK")


def test_owners_and_auditors_download_their_rooms_bundles_and_analysts_may_not(
    client, world, eu_room
) -> None:
    client.force_login(world.dave)
    response = client.get(reverse("audit-bundle-download", args=["cardio"]))
    assert response.status_code == 200
    assert drain(response).startswith(b"PK")
    client.force_login(world.carol)  # usz is only invited to cardio; swiss is its own room
    assert [b["room"].slug for b in client.get(reverse("audit-bundles")).context["rooms"]] == [
        "swiss"
    ]
    client.force_login(world.bob)
    assert client.get(reverse("audit-bundles")).status_code == 403
    client.force_login(world.mallory)
    assert client.get(reverse("audit-bundle-download", args=["cardio"])).status_code == 404


def test_bundle_pages_refuse_the_wrong_method(client, world, eu_room) -> None:
    client.force_login(world.rita)
    assert client.post(reverse("audit-bundle-download", args=["cardio"])).status_code == 405
    assert factories.api(world.rita).delete("/api/audit/bundles/cardio/").status_code == 405
    assert client.get(reverse("audit-bundle-prepare", args=["cardio"])).status_code == 405
