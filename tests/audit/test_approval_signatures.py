"""The offline verifier re-verifies every approval's Ed25519 signature: a forged or altered one
fails naming the event, even in a log the operator signed with the log key."""

from __future__ import annotations

import base64
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
from jobs import queries
from tests.audit.bundling import run_verify, trust_file
from tests.audit.domain import CHARITE, USZ, as_bodies, happy_run, index_of, mutate, public_key_of
from tests.factories import JOIN_SQL, propose

APPROVAL = index_of(happy_run(), "query.approved")


def check(run, **kwargs) -> None:
    check_domain_rules(as_bodies(run), **kwargs)


def flip_signature(run) -> None:
    data = run[APPROVAL][1]
    raw = bytearray(base64.b64decode(data["signature"]))
    raw[0] ^= 0x01
    data["signature"] = base64.b64encode(bytes(raw)).decode()


def test_signed_decisions_pass_with_the_keys_they_name_or_with_pinned_keys() -> None:
    check(happy_run())
    check(happy_run(), approver_keys={CHARITE: [public_key_of(CHARITE)], USZ: [public_key_of(USZ)]})


def test_an_altered_approval_signature_fails_naming_the_event() -> None:
    with pytest.raises(VerificationError) as failure:
        check(mutate(flip_signature, sign=False))
    assert str(failure.value) == (
        f"event {APPROVAL} (query.approved): the signature of {CHARITE} on query:7 does not verify"
    )


def test_a_signature_over_another_digest_or_decision_fails() -> None:
    def other_digest(run) -> None:
        run[APPROVAL][1]["digest"] = "e" * 64

    with pytest.raises(VerificationError, match=f"event {APPROVAL} .*does not verify"):
        check(mutate(other_digest, sign=False))

    def approval_as_rejection(run) -> None:
        run[APPROVAL] = ("query.rejected", run[APPROVAL][1])

    with pytest.raises(VerificationError, match=f"event {APPROVAL} .*does not verify"):
        check(mutate(approval_as_rejection, sign=False))


def test_an_approval_by_a_key_the_trust_file_does_not_pin_fails() -> None:
    def signed_by_usz_key(run) -> None:  # a valid signature, by the wrong key
        run[APPROVAL][1]["public_key"] = base64.b64encode(public_key_of(USZ)).decode()

    forged = mutate(signed_by_usz_key, sign=False)
    with pytest.raises(VerificationError, match="does not verify"):
        check(forged)  # the key the event names did not make the signature
    with pytest.raises(VerificationError, match=f"{CHARITE} decided on query:7 with a key the"):
        check(happy_run(), approver_keys={CHARITE: [public_key_of(USZ)], USZ: [public_key_of(USZ)]})
    with pytest.raises(VerificationError, match=f"the trust file pins no key for {USZ}"):
        check(happy_run(), approver_keys={CHARITE: [public_key_of(CHARITE)]})


def test_organization_lines_of_a_trust_file_are_parsed_and_checked(tmp_path) -> None:
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    key = base64.b64encode(public_key_of(CHARITE)).decode()
    trust = parse_trust_file(f"{vkey}\norganization {CHARITE} {key}\n")
    assert trust.organization_keys == {CHARITE: [public_key_of(CHARITE)]}
    for broken in (
        f"organization {CHARITE}",
        f"organization charite {key}",
        f"organization {CHARITE} AAAA",
    ):
        with pytest.raises(VerificationError, match="trust file line 2"):
            parse_trust_file(f"{vkey}\n{broken}\n")


@pytest.mark.django_db
def test_real_approvals_verify_offline_and_an_operator_forged_one_is_named(
    settings, world, tmp_path
) -> None:
    """The organisations sign in their key service (jobs.queries.decide_query); the operator,
    who holds the log key, then appends an approval whose signature it altered and signs the log.
    The checkpoint is valid; the approval is not."""
    settings.AUDIT_CHECKPOINT_SIGNING = "off"
    room = world.study(tmp_path)
    query = propose(room, world.bob, world.pharma, sql=JOIN_SQL, title="Costs by diagnosis")
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        queries.decide_query(query=query, organization=org, by=owner, approve=True)
    out = io.StringIO()
    call_command("audit_keys", "--organizations", stdout=out)
    assert f"organization org:{world.charite.pk} " in out.getvalue()
    trust = trust_file(tmp_path, *[line for line in out.getvalue().splitlines() if " " in line])
    bundle = tmp_path / "real.zip"
    export_bundle(room=room, output=bundle)
    verdict = run_verify(bundle, trust)
    assert verdict.ok, verdict.stderr
    assert "approval signatures verify under the organisations' keys your trust file" in (
        verdict.stdout
    )

    log = room_log_name(room.pk)
    real = AuditEvent.objects.filter(log__name=log, type="query.approved").order_by("seq").first()
    data = json.loads(bytes(real.canonical))["data"]
    signature = bytearray(base64.b64decode(data["signature"]))
    signature[10] ^= 0x40
    data["signature"] = base64.b64encode(bytes(signature)).decode()
    with transaction.atomic():
        forged = record_event(
            log=log, type="query.approved", actor=None, subject=f"query:{query.pk}", data=data
        )
    checkpoints.sign_checkpoint(log)
    export_bundle(room=room, output=tmp_path / "forged.zip")
    verdict = run_verify(tmp_path / "forged.zip", trust)
    assert verdict.returncode == 1
    assert verdict.stderr.strip() == (
        f"FAILED: event {forged.seq} (query.approved): the signature of {data['organization']} "
        f"on query:{query.pk} does not verify"
    )
