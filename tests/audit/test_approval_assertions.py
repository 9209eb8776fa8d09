"""The offline verifier re-verifies every approval: the owner's passkey assertion (or machine
key signature) over the decision's challenge, by a credential the trust file pins. A forged,
altered, replayed or unpinned one fails naming the event, even in a log the operator signed
with the log key."""

from __future__ import annotations

import base64
import copy
import io
import json

import pytest
from django.core.management import call_command
from django.db import transaction

from cleanroom.audit import checkpoints
from cleanroom.audit.bundles import export_bundle
from cleanroom.audit.log import record_event, room_log_name
from cleanroom.audit.models import AuditEvent
from cleanroom.audit.verifier import VerificationError
from cleanroom.audit.verifier.bundle import parse_trust_file
from cleanroom.audit.verifier.rules import check_domain_rules
from tests import factories
from tests.audit.bundling import run_verify, trust_file
from tests.audit.domain import (
    CHARITE,
    USZ,
    as_bodies,
    happy_run,
    index_of,
    mutate,
    pinned_credential,
)
from tests.factories import JOIN_SQL, propose

APPROVAL = index_of(happy_run(), "query.approved")  # Charité's, by passkey
PINNED = {CHARITE: [pinned_credential(CHARITE)], USZ: [pinned_credential(USZ)]}


def check(run, **kwargs) -> None:
    check_domain_rules(as_bodies(run), **kwargs)


def flip(name: str, at: int = APPROVAL):
    def change(run) -> None:
        evidence = run[at][1]["approval"]
        raw = bytearray(base64.b64decode(evidence[name]))
        raw[-1] ^= 0x01
        evidence[name] = base64.b64encode(bytes(raw)).decode()

    return change


def test_owners_decisions_pass_with_the_credentials_they_name_or_with_pinned_ones() -> None:
    kinds = {
        data["organization"]: data["approval"]["kind"]
        for kind, data in happy_run()
        if kind == "query.approved"
    }
    assert kinds == {CHARITE: "passkey", USZ: "machine-key"}
    check(happy_run())
    check(happy_run(), approver_credentials=PINNED)


def test_an_altered_assertion_signature_fails_naming_the_event() -> None:
    with pytest.raises(VerificationError) as failure:
        check(mutate(flip("signature"), sign=False))
    assert str(failure.value) == (
        f"event {APPROVAL} (query.approved): {CHARITE} on query:7: the passkey's signature of "
        f"{CHARITE} does not verify"
    )


def test_an_altered_machine_key_signature_fails() -> None:
    usz = next(
        i
        for i, (kind, data) in enumerate(happy_run())
        if kind == "query.approved" and data["organization"] == USZ
    )
    with pytest.raises(VerificationError, match=f"event {usz} .*machine key's signature"):
        check(mutate(flip("signature", usz), sign=False))


def test_an_assertion_for_another_digest_or_decision_fails() -> None:
    def other_digest(run) -> None:
        run[APPROVAL][1]["digest"] = "e" * 64

    with pytest.raises(VerificationError, match=f"event {APPROVAL} .*another challenge"):
        check(mutate(other_digest, sign=False))

    def approval_as_rejection(run) -> None:
        run[APPROVAL] = ("query.rejected", run[APPROVAL][1])

    with pytest.raises(VerificationError, match=f"event {APPROVAL} .*another challenge"):
        check(mutate(approval_as_rejection, sign=False))


def test_an_assertion_replayed_in_a_later_approval_fails() -> None:
    """The operator revokes nothing but replays Charité's assertion as a second approval."""

    def replayed(run) -> None:
        run.insert(
            APPROVAL + 1, ("query.approval_revoked", {"query": "query:7", "organization": CHARITE})
        )
        run.insert(APPROVAL + 2, copy.deepcopy(run[APPROVAL]))

    with pytest.raises(VerificationError, match=f"replays event {APPROVAL}"):
        check(mutate(replayed, sign=False))


def test_a_missing_or_empty_assertion_fails() -> None:
    def removed(run) -> None:
        del run[APPROVAL][1]["approval"]

    with pytest.raises(VerificationError, match="lacks the field 'approval'"):
        check(mutate(removed, sign=False))

    def emptied(run) -> None:
        run[APPROVAL][1]["approval"] = {}

    with pytest.raises(VerificationError, match="unknown kind"):
        check(mutate(emptied, sign=False))


def test_an_approval_by_a_credential_the_trust_file_does_not_pin_fails() -> None:
    def by_usz_credential(run) -> None:  # Zurich's valid credential, named for Charité
        usz = pinned_credential(USZ)
        run[APPROVAL][1]["approval"] = {
            "kind": usz.kind,
            "credential_id": base64.b64encode(usz.credential_id).decode(),
            "public_key": base64.b64encode(usz.public_key).decode(),
            "signature": base64.b64encode(bytes(64)).decode(),
        }

    with pytest.raises(VerificationError, match="not a credential pinned for"):
        check(mutate(by_usz_credential, sign=False), approver_credentials=PINNED)
    with pytest.raises(VerificationError, match=f"not a credential pinned for {CHARITE}"):
        check(happy_run(), approver_credentials={**PINNED, CHARITE: PINNED[USZ]})
    with pytest.raises(VerificationError, match=f"the trust file pins no credential for {USZ}"):
        check(happy_run(), approver_credentials={CHARITE: PINNED[CHARITE]})


def test_credential_lines_of_a_trust_file_are_parsed_and_checked() -> None:
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    lines = [pinned_credential(CHARITE).trust_line(), pinned_credential(USZ).trust_line()]
    trust = parse_trust_file("\n".join([vkey, *lines]) + "\n")
    assert trust.approver_credentials == PINNED
    passkey = lines[0].split()
    for broken in (
        f"passkey {CHARITE}",
        " ".join(["passkey", "charite", *passkey[2:]]),
        " ".join([*passkey[:4], "!!!"]),
        f"machine-key {USZ} AAAA AAAA",
    ):
        with pytest.raises(VerificationError, match="trust file line 2"):
            parse_trust_file(f"{vkey}\n{broken}\n")


@pytest.mark.django_db
def test_real_approvals_verify_offline_and_an_operator_forged_one_is_named(
    settings, world, tmp_path
) -> None:
    """The owners decide with their passkeys (jobs.queries.decide_query); the regulator pins
    their credentials (export_owner_credentials); the operator, who holds the log key, then
    appends an approval whose assertion it altered and signs the log. The checkpoint is valid;
    the approval is not."""
    settings.AUDIT_CHECKPOINT_SIGNING = "off"
    room = world.study(tmp_path)
    query = propose(room, world.bob, world.pharma, sql=JOIN_SQL, title="Costs by diagnosis")
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    out = io.StringIO()
    call_command("export_owner_credentials", stdout=out)
    assert f"passkey org:{world.charite.pk} localhost " in out.getvalue()
    trust = trust_file(tmp_path, out.getvalue())
    bundle = tmp_path / "real.zip"
    export_bundle(room=room, output=bundle)
    verdict = run_verify(bundle, trust)
    assert verdict.ok, verdict.stderr
    assert "by a\n  credential your trust file pins for that organisation" in verdict.stdout

    log = room_log_name(room.pk)
    real = AuditEvent.objects.filter(log__name=log, type="query.approved").order_by("seq").first()
    data = json.loads(bytes(real.canonical))["data"]
    signature = bytearray(base64.b64decode(data["approval"]["signature"]))
    signature[10] ^= 0x40
    data["approval"]["signature"] = base64.b64encode(bytes(signature)).decode()
    with transaction.atomic():
        forged = record_event(
            log=log, type="query.approved", actor=None, subject=f"query:{query.pk}", data=data
        )
    checkpoints.sign_checkpoint(log)
    export_bundle(room=room, output=tmp_path / "forged.zip")
    verdict = run_verify(tmp_path / "forged.zip", trust)
    assert verdict.returncode == 1
    assert verdict.stderr.strip() == (
        f"FAILED: event {forged.seq} (query.approved): {data['organization']} on "
        f"query:{query.pk}: the passkey's signature of {data['organization']} does not verify"
    )
