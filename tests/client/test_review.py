"""An owner's client signs only what it has checked: it recomputes the version's digest from the
canonical form the server shows, shows the owner that form, and signs nothing when the server
asks for a signature over a digest that is not that form's. The lying server here is a real
test server whose database was changed behind the platform's back, as an operator could."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from cleanroom.audit.verifier.canonical import canonical_json
from cleanroom.client import Client, RefusedToSign, signing
from cleanroom.client.cli import NOT_SIGNED, main
from jobs.models import Query
from jobs.queries.canonical import digest_of
from tests.client.test_approvals import _machine_key
from tests.factories import JOIN_SQL, propose, token_for

pytestmark = pytest.mark.django_db(transaction=True)

# What the owner is shown and would sign: a count by diagnosis at a small ε.
HARMLESS_SQL = """SELECT d.diagnosis, COUNT(*) AS n
FROM charite.patients AS d JOIN usz.patients AS v ON d.person_hash = v.person_hash
GROUP BY d.diagnosis"""


@pytest.fixture
def as_alice(world, live_server, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("CLEANROOM_URL", live_server.url)
    monkeypatch.setenv("CLEANROOM_TOKEN", token_for(world.alice))


def _wanted_and_shown(world, study):
    """The query the server wants approved (the costs, at ε 0.9) and one it shows instead."""
    wanted = propose(study, world.bob, world.pharma, sql=JOIN_SQL, epsilon=Decimal("0.9"))
    shown = propose(study, world.bob, world.pharma, sql=HARMLESS_SQL, title="Counts")
    return wanted, shown


def test_the_client_recomputes_the_digest_the_server_states(world, study, live_server):
    query = propose(study, world.bob, world.pharma, sql=JOIN_SQL)
    review = Client(live_server.url, token_for(world.alice)).review(query.pk, "study")
    assert review.digest == query.digest == digest_of(review.canonical)
    assert review.canonical == query.canonical
    text = str(review)
    for shown in (
        f"Query {query.pk} in study, version 1: Stay by age band",
        "SELECT d.diagnosis, COUNT(*) AS n, SUM(v.cost) AS cost",
        f"Mechanism: {query.mechanism}; output: aggregate",
        "Privacy: ε 0.5, δ 0 charged to each dataset",
        f"Receivers: org:{world.pharma.pk} (the server names them pharma)",
        "charite.patients version 1",
        "cost (measure), used as measure, clamped to [0, 100000]",
        f"Digest, recomputed here from this form: {query.digest}",
    ):
        assert shown in text, shown


def test_a_server_asking_to_sign_another_querys_digest_gets_no_signature(
    world, study, live_server, tmp_path
):
    """The server shows a harmless query's form (and fields) but hands out the digest of the
    query it wants approved: a signature over that digest would approve the costs at ε 0.9."""
    key = _machine_key(world, tmp_path, "charite", world.alice)
    wanted, shown = _wanted_and_shown(world, study)
    Query.objects.filter(pk=wanted.pk).update(
        **{
            name: getattr(shown, name)
            for name in ("title", "sql", "epsilon", "mechanism", "canonical")
        }
    )
    alice = Client(live_server.url, token_for(world.alice))
    with pytest.raises(RefusedToSign) as refused:
        alice.approve(wanted.pk, "charite", key, room="study")
    assert refused.value.code == "digest_mismatch"
    assert f"asks for a signature over digest {wanted.digest}" in refused.value.message
    assert f"the form it shows hashes to {shown.digest}" in refused.value.message
    assert not wanted.approvals.exists() and not shown.approvals.exists()


def test_the_command_line_signs_nothing_for_a_lying_server_and_exits_4(
    world, study, as_alice, tmp_path, capsys
):
    key = _machine_key(world, tmp_path, "charite", world.alice)
    wanted, shown = _wanted_and_shown(world, study)
    Query.objects.filter(pk=wanted.pk).update(canonical=shown.canonical)
    argv = ["approve", "study", str(wanted.pk), "--org", "charite", "--key", str(key), "--yes"]
    assert main(argv) == NOT_SIGNED
    said = capsys.readouterr()
    assert said.out == ""  # not even the form: it is not what the digest binds
    assert said.err.startswith("cleanroom: not signed (digest_mismatch): The server asks")
    assert not wanted.approvals.exists()


def test_fields_that_say_otherwise_than_the_signed_form_are_refused(
    world, study, live_server, tmp_path
):
    """The digest is the form's, but the query's own fields, which a script may have shown its
    owner, name the harmless text: the client refuses rather than sign what was not shown."""
    key = _machine_key(world, tmp_path, "charite", world.alice)
    wanted, shown = _wanted_and_shown(world, study)
    Query.objects.filter(pk=wanted.pk).update(sql=shown.sql, epsilon=shown.epsilon)
    alice = Client(live_server.url, token_for(world.alice))
    with pytest.raises(RefusedToSign) as refused:
        alice.reject(wanted.pk, "charite", key, room="study")
    assert refused.value.code == "form_mismatch"
    assert refused.value.message.startswith(
        f"Query {wanted.pk}'s sql, epsilon as the server states them differ from its canonical"
    )
    assert not wanted.approvals.exists()


def test_a_draft_has_no_form_to_sign(world, study, live_server, tmp_path):
    key = _machine_key(world, tmp_path, "charite", world.alice)
    draft = propose(study, world.bob, world.pharma, sql=JOIN_SQL, submit=False)
    alice = Client(live_server.url, token_for(world.alice))
    with pytest.raises(RefusedToSign) as refused:
        alice.approve(draft.pk, "charite", key, room="study")
    assert refused.value.code == "not_submitted"


def test_the_owner_reads_the_form_then_signs_exactly_it(world, study, live_server, tmp_path):
    key = _machine_key(world, tmp_path, "charite", world.alice)
    query = propose(study, world.bob, world.pharma, sql=JOIN_SQL)
    alice = Client(live_server.url, token_for(world.alice))
    review = alice.review(query.pk, "study")
    approval = alice.approve(review, "charite", key)
    assert approval["digest"] == review.digest and approval["verified"] is True


def test_review_prints_the_form_and_the_page_where_a_passkey_decides(
    world, study, as_alice, live_server, capsys
):
    query = propose(study, world.bob, world.pharma, sql=JOIN_SQL)
    assert main(["review", "study", str(query.pk)]) == 0
    out = capsys.readouterr().out
    assert f"Digest, recomputed here from this form: {query.digest}" in out
    page = live_server.url + reverse("query-detail", args=["study", query.pk])
    assert f"open {page} and check that the page shows digest {query.digest}." in out


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [True, False, None, -7, 2**70], "é": "Charité, ε 0.5 — ✓"},
        {"nested": {"z": [], "y": {}, "x": [{"k": "v"}]}, "quote": 'a"b\\c\n\t\u2028'},
        [],
        "",
    ],
)
def test_the_clients_canonical_json_is_the_kernels(value):
    """The client restates canonical JSON (it imports no server code): byte for byte the
    kernel's, or it would refuse every honest server's digest."""
    assert signing.canonical_json(value) == canonical_json(value)


def test_the_client_refuses_what_the_kernel_refuses():
    for not_canonical in ({"x": 0.5}, {1: "a"}, {"x": {1, 2}}, {"x": "\ud800"}):
        with pytest.raises(TypeError):
            canonical_json(not_canonical)
        with pytest.raises(TypeError):
            signing.canonical_json(not_canonical)


def test_the_clients_digest_is_the_query_services(world, study):
    query = propose(study, world.bob, world.pharma, sql=JOIN_SQL)
    assert signing.query_digest(query.canonical) == digest_of(query.canonical)
    assert signing.query_digest(query.canonical) == query.digest
