"""Every URL of the project, pages and API, asked by every persona with each method it takes:
the status each gets is written out below, by hand, not derived from the code under test. A
page can then never allow what the API refuses without this table saying so, and a new URL
without a row fails `test_every_url_pattern_has_a_row`.

The scene is one room, `study`, made by pharma (bob, its analyst) with the Charité and Zurich
hospitals as active members that contributed data, and Leiden invited but not yet answered.
Each request runs in a transaction rolled back afterwards, so each row sees the same scene.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.models import ApiToken
from cleanroom.audit import checkpoints
from cleanroom.audit.log import room_log_name
from jobs import tasks
from jobs.execution import outbox
from jobs.execution.lifecycle import run_query
from jobs.models import Approval, Job, Query, Room, RoomMembership
from jobs.rooms.services import invite_organization
from parties import services as party_services
from parties.models import Organization
from tests import factories
from tests.factories import JOIN_SQL, propose

pytestmark = pytest.mark.django_db

TEE_SITE = "eu-frankfurt-tee"

# Who asks. The columns of every row below are in this order.
#   anon     nobody logged in
#   bob      analyst of pharma, the room's creator and the queries' author organisation
#   alice    owner of the Charité (a member that contributed data and approves)
#   ivan     analyst of the Charité: a member, but not of the queries' author organisation
#   dave     auditor of the Charité
#   lena     owner of Leiden, invited to the room and not yet answered
#   mallory  owner of an organisation not in the room
#   rita     regulator of the EU (no organisation)
#   oper     the platform's operator (staff and superuser, no organisation)
PERSONAS = ("anon", "bob", "alice", "ivan", "dave", "lena", "mallory", "rita", "oper")

# (URL name, method): expected status per persona, in PERSONAS order. For the pages, 302 is a
# redirect: to the login page for `anon`, to the next page after a change for the others.
# Write requests carry an empty body unless BODIES says otherwise, so "allowed" shows as the
# form or the API validating the input (200 with errors, 400) or as the change done.
MATRIX: dict[tuple[str, str], str] = {
    # ---- the front door
    #                                      anon bob alice ivan dave lena mall rita oper
    ("dashboard", "GET"): "                 302 200 200   200  200  200  200  200  200",
    ("healthz", "GET"): "                   200 200 200   200  200  200  200  200  200",
    ("favicon", "GET"): "                   301 301 301   301  301  301  301  301  301",
    # Prometheus's, with the operator's bearer token only (none configured here: no such page).
    ("metrics", "GET"): "                   404 404 404   404  404  404  404  404  404",
    ("login", "GET"): "                     200 200 200   200  200  200  200  200  200",
    ("login", "POST"): "                    200 200 200   200  200  200  200  200  200",
    ("logout", "POST"): "                   302 302 302   302  302  302  302  302  302",
    # Signing in with a passkey: anyone may ask; an empty assertion signs nobody in (the page).
    ("passkey-sign-in-options", "POST"): "  200 200 200   200  200  200  200  200  200",
    ("passkey-sign-in", "POST"): "          200 200 200   200  200  200  200  200  200",
    # ---- the user's own account: each sees and changes their own tokens and sessions alone
    ("account-security", "GET"): "          302 200 200   200  200  200  200  200  200",
    ("account-token-create", "POST"): "     302 200 200   200  200  200  200  200  200",
    ("account-token-revoke", "POST"): "     302 302 404   404  404  404  404  404  404",
    ("account-sign-out-others", "POST"): "  302 302 302   302  302  302  302  302  302",
    # ---- datasets (pages): the owner's organisation manages; room members read metadata
    ("dataset-list", "GET"): "              302 200 200   200  200  200  200  200  200",
    ("dataset-create", "GET"): "            302 403 200   403  403  200  200  403  403",
    ("dataset-create", "POST"): "           302 403 200   403  403  200  200  403  403",
    ("dataset-schema", "POST"): "           302 403 422   403  403  422  422  403  403",
    ("dataset-detail", "GET"): "            302 200 200   200  200  404  404  404  404",
    ("version-create", "GET"): "            302 403 200   403  403  404  404  404  404",
    ("version-create", "POST"): "           302 403 200   403  403  404  404  404  404",
    ("policy-edit", "GET"): "               302 403 200   403  403  404  404  404  404",
    ("policy-edit", "POST"): "              302 403 200   403  403  404  404  404  404",
    # The owner's kill switch: the dataset's owners alone (an empty form changes nothing).
    ("dataset-suspension", "POST"): "       302 403 302   403  403  404  404  404  404",
    # ---- rooms (pages): invitees see the room, not what happens in it
    ("room-list", "GET"): "                 302 200 200   200  200  200  200  200  200",
    ("room-create", "GET"): "               302 200 200   200  403  200  200  403  403",
    ("room-create", "POST"): "              302 200 200   200  403  200  200  403  403",
    ("room-detail", "GET"): "               302 200 200   200  200  200  404  404  404",
    ("room-invite", "POST"): "              302 302 302   302  403  403  404  404  404",
    ("room-respond", "POST"): "             302 404 404   404  404  302  404  404  404",
    ("room-contribute", "POST"): "          302 403 302   403  403  403  404  404  404",
    # The kill switch for a member's participation: an owner of that member alone, never the
    # room's creator or analyst (an empty form changes nothing).
    ("participation-suspension", "POST"): " 302 403 302   403  403  403  404  404  404",
    ("room-budget", "GET"): "               302 200 200   200  200  403  404  404  404",
    # ---- queries (pages): a draft is changed by its author organisation alone
    ("query-create", "GET"): "              302 200 403   200  403  403  404  404  404",
    ("query-create", "POST"): "             302 200 403   200  403  403  404  404  404",
    ("query-plan", "POST"): "               302 200 200   200  200  403  404  404  404",
    ("query-detail", "GET"): "              302 200 200   200  200  403  404  404  404",
    ("query-edit", "GET"): "                302 200 403   403  403  403  404  404  404",
    ("query-edit", "POST"): "               302 200 403   403  403  403  404  404  404",
    ("query-submit", "POST"): "             302 302 403   403  403  403  404  404  404",
    ("query-revise", "POST"): "             302 302 403   403  403  403  404  404  404",
    ("query-decide", "POST"): "             302 403 302   403  403  403  404  404  404",
    ("approval-revoke", "POST"): "          302 403 302   403  403  403  404  404  404",
    ("inbox", "GET"): "                     302 200 200   200  200  200  200  200  200",
    # ---- jobs and results (pages): results for the receivers' members (pharma) only
    ("job-run", "POST"): "                  302 302 403   302  403  403  404  404  404",
    ("job-detail", "GET"): "                302 200 200   200  200  403  404  404  404",
    ("job-cancel", "POST"): "               302 302 403   302  403  403  404  404  404",
    ("result-detail", "GET"): "             302 200 403   403  403  403  404  404  404",
    ("result-download", "GET"): "           302 200 403   403  403  403  404  404  404",
    ("result-opening", "GET"): "            302 200 403   403  403  403  404  404  404",
    # An aggregate result has no files and no archive: the receiver gets 404, others 403.
    ("result-file", "GET"): "               302 404 403   403  403  403  404  404  404",
    ("result-archive", "GET"): "            302 404 403   403  403  403  404  404  404",
    # ---- audit (pages): trails for members, bundles for owners, auditors and regulators
    ("audit-trail", "GET"): "               302 200 200   200  200  200  200  302  403",
    ("audit-bundles", "GET"): "             302 403 200   403  200  200  200  200  403",
    ("audit-bundle-download", "GET"): "     302 404 200   404  200  404  404  200  404",
    ("audit-bundle-prepare", "POST"): "     302 404 302   404  302  404  404  302  404",
    # ---- API: tokens (the matrix's clients hold tokens, and a token cannot mint tokens: 403)
    ("api-token", "POST"): "                400 400 400   400  400  400  400  400  400",
    ("api-tokens", "GET"): "                401 200 200   200  200  200  200  200  200",
    ("api-tokens", "POST"): "               401 403 403   403  403  403  403  403  403",
    ("api-token-detail", "GET"): "          401 200 404   404  404  404  404  404  404",
    ("api-token-detail", "DELETE"): "       401 204 404   404  404  404  404  404  404",
    # ---- API: parties
    ("api-organizations", "GET"): "         401 200 200   200  200  200  200  200  200",
    # one's own passkeys: registering one for an organisation one owns data in, or (the
    # regulator and the operator, who name none) one that only signs in
    ("passkeys", "GET"): "                  302 200 200   200  200  200  200  200  200",
    ("passkey-options", "POST"): "          302 403 200   403  403  200  200  200  200",
    ("passkey-register", "POST"): "         302 302 302   302  302  302  302  302  302",
    ("passkey-remove", "POST"): "           302 404 302   404  404  404  404  404  404",
    # the Charité's approval credentials (page and API alike): its owners' alone
    ("organization-credentials", "GET"): "  302 404 200   403  403  404  404  404  404",
    ("organization-credentials", "POST"): " 302 404 200   403  403  404  404  404  404",
    ("organization-credential-remove", "POST"): "302 404 302 403  403  404  404  404  404",
    ("api-approval-credentials", "GET"): "  401 404 200   403  403  404  404  404  404",
    ("api-approval-credentials", "POST"): " 401 404 400   403  403  404  404  404  404",
    ("api-approval-credential-remove", "POST"): "401 404 200 403  403  404  404  404  404",
    ("api-jurisdictions", "GET"): "         401 200 200   200  200  200  200  200  200",
    ("api-sites", "GET"): "                 401 200 200   200  200  200  200  200  200",
    ("api-datasets", "GET"): "              401 200 200   200  200  200  200  200  200",
    # A write that names an organisation asks the rule for it first: the regulator and the
    # operator name none of theirs (404), the others get 403 or their input validated (400).
    ("api-datasets", "POST"): "             401 403 400   403  403  400  400  404  404",
    ("api-infer-schema", "POST"): "         401 403 400   403  403  400  400  403  403",
    ("api-dataset", "GET"): "               401 200 200   200  200  404  404  404  404",
    ("api-dataset-versions", "GET"): "      401 200 200   200  200  404  404  404  404",
    ("api-dataset-versions", "POST"): "     401 403 400   403  403  404  404  404  404",
    ("api-policy", "GET"): "                401 200 200   200  200  404  404  404  404",
    # Every policy field is optional: an empty PUT writes the same terms as a new version.
    ("api-policy", "PUT"): "                401 403 200   403  403  404  404  404  404",
    ("api-policy-history", "GET"): "        401 200 200   200  200  404  404  404  404",
    ("api-dataset-suspension", "POST"): "   401 403 200   403  403  404  404  404  404",
    ("api-dataset-suspension", "DELETE"): " 401 403 409   403  403  404  404  404  404",
    # ---- API: rooms
    ("api-rooms", "GET"): "                 401 200 200   200  200  200  200  200  200",
    ("api-rooms", "POST"): "                401 400 400   400  403  400  400  404  404",
    ("api-room", "GET"): "                  401 200 200   200  200  200  404  404  404",
    ("api-invite", "POST"): "               401 400 400   400  403  403  404  404  404",
    ("api-accept", "POST"): "               401 403 403   403  403  200  404  404  404",
    ("api-decline", "POST"): "              401 403 403   403  403  200  404  404  404",
    ("api-contribute", "POST"): "           401 403 400   403  403  403  404  404  404",
    ("api-participation-suspension", "POST"): "    401 403 200   403  403  403  404  404  404",
    ("api-participation-suspension", "DELETE"): "  401 403 409   403  403  403  404  404  404",
    ("api-budget", "GET"): "                401 200 200   200  200  403  404  404  404",
    # ---- API: queries
    ("api-queries", "GET"): "               401 200 200   200  200  403  404  404  404",
    ("api-queries", "POST"): "              401 400 403   400  403  403  404  404  404",
    ("api-query-plan", "POST"): "           401 400 400   400  400  403  404  404  404",
    ("api-query", "GET"): "                 401 200 200   200  200  403  404  404  404",
    ("api-query", "PATCH"): "               401 200 403   403  403  403  404  404  404",
    ("api-query-submit", "POST"): "         401 200 403   403  403  403  404  404  404",
    ("api-query-approve", "POST"): "        401 403 201   403  403  403  404  404  404",
    ("api-query-reject", "POST"): "         401 403 201   403  403  403  404  404  404",
    ("api-approval-revoke", "POST"): "      401 403 200   403  403  403  404  404  404",
    ("api-inbox", "GET"): "                 401 200 200   200  200  200  200  200  200",
    # ---- API: jobs and results
    ("api-query-run", "POST"): "            401 201 403   201  403  403  404  404  404",
    ("api-job", "GET"): "                   401 200 200   200  200  403  404  404  404",
    # The job has finished: those who may cancel are told it is too late (409).
    ("api-job-cancel", "POST"): "           401 409 403   409  403  403  404  404  404",
    ("api-result", "GET"): "                401 200 403   403  403  403  404  404  404",
    ("api-result-file", "GET"): "           401 404 403   403  403  403  404  404  404",
    # ---- API: audit
    ("api-audit-events", "GET"): "          401 200 200   200  200  200  200  403  403",
    ("api-audit-checkpoint", "GET"): "      401 200 200   200  200  404  404  404  404",
    ("api-audit-consistency", "GET"): "     401 200 200   200  200  404  404  404  404",
    # Analysts read the room's log but do not witness it (403); the regulator and the operator
    # have no organisation to name (400); Leiden and Mallory's do not read the log (404).
    ("api-audit-witness", "POST"): "        401 403 200   403  200  404  404  400  400",
    ("api-audit-bundles", "GET"): "         401 200 200   200  200  200  200  200  200",
    ("api-audit-bundle", "GET"): "          401 404 200   404  200  404  404  200  404",
    ("api-audit-bundle", "POST"): "         401 404 201   404  201  404  404  201  404",
    # The API's description is public; it holds no data.
    ("api-schema", "GET"): "                200 200 200   200  200  200  200  200  200",
    ("api-docs", "GET"): "                  200 200 200   200  200  200  200  200  200",
    ("api-redoc", "GET"): "                 200 200 200   200  200  200  200  200  200",
    # ---- the site API: signed by a site alone; no user's session or token opens it (403), and
    # it takes POST only (tests/jobs/test_site_api.py plays the sites)
    ("site-api-claim", "POST"): "         403 403 403   403  403  403  403  403  403",
    ("site-api-lease", "POST"): "         403 403 403   403  403  403  403  403  403",
    ("site-api-progress", "POST"): "      403 403 403   403  403  403  403  403  403",
    ("site-api-attestation", "POST"): "   403 403 403   403  403  403  403  403  403",
    ("site-api-charge", "POST"): "        403 403 403   403  403  403  403  403  403",
    ("site-api-key-released", "POST"): "  403 403 403   403  403  403  403  403  403",
    ("site-api-release", "POST"): "       403 403 403   403  403  403  403  403  403",
    ("site-api-fail", "POST"): "          403 403 403   403  403  403  403  403  403",
    ("site-api-placement", "POST"): "     403 403 403   403  403  403  403  403  403",
    ("site-api-step-claim", "POST"): "    403 403 403   403  403  403  403  403  403",
    ("site-api-step-delivery", "POST"): " 403 403 403   403  403  403  403  403  403",
    ("site-api-step-shares-may-move", "POST"): "403 403 403 403 403 403 403 403 403",
    ("site-api-step-complete", "POST"): " 403 403 403   403  403  403  403  403  403",
    ("site-api-step-lease", "POST"): "    403 403 403   403  403  403  403  403  403",
    ("site-api-step-progress", "POST"): " 403 403 403   403  403  403  403  403  403",
    ("site-api-step-key-released", "POST"): "403 403 403 403 403 403 403 403 403",
    ("site-api-step-release", "POST"): "  403 403 403   403  403  403  403  403  403",
    ("site-api-step-fail", "POST"): "     403 403 403   403  403  403  403  403  403",
    # ---- the operator's admin: staff only (its other pages sit behind the same check)
    ("admin:index", "GET"): "               302 302 302   302  302  302  302  302  200",
    ("admin:login", "GET"): "               200 200 200   200  200  200  200  200  302",
}

# The admin's own URLs (Django's, one per registered model and action) are covered by its
# staff check, exercised above through its index; they are not listed one by one.
ADMIN_NAMESPACE = "admin"


@dataclass
class Scene:
    room: Room
    users: dict[str, User | None]
    orgs: dict[str, str]  # persona: the slug of its organisation, if any
    draft: Query
    pending: Query
    ready: Query  # approved by both owners, not run
    ran: Query  # approved and run; its job released a result to pharma
    job: Job
    invitation: RoomMembership
    approval: Approval  # the Charité's approval of `ready`
    token: ApiToken  # one of bob's API tokens
    alice_passkey: int  # the passkey alice approved it with


@pytest.fixture
def scene(world, tmp_path, monkeypatch) -> Scene:
    room = world.study(tmp_path)
    ivan = factories.user("ivan")
    party_services.add_membership(organization=world.charite, user=ivan, role="analyst")
    leiden = factories.organization("leiden", "Leiden UMC", lena="owner")
    invitation = invite_organization(
        room=room, organization=leiden, acting_for=world.pharma, by=world.bob
    )
    operator = User.objects.create_superuser("operator", password="correct-horse-battery")

    draft = propose(room, world.bob, world.pharma, submit=False, title="Draft of pharma")
    pending = propose(room, world.bob, world.pharma, title="Waiting for owners")
    ready = approve(world, propose(room, world.bob, world.pharma, sql=JOIN_SQL, title="Ready"))
    ran = approve(world, propose(room, world.bob, world.pharma, sql=JOIN_SQL, title="Ran"))
    # Run `ran` to a released result, in this process (the broker is not involved).
    monkeypatch.setenv("CLEANROOM_SITE", TEE_SITE)
    monkeypatch.setattr(outbox, "dispatch", lambda job_id: None)
    job = run_query(query=ran, by=world.bob)
    assert tasks.run_job(job.pk, TEE_SITE) == "released"
    checkpoints.sign_checkpoint(room_log_name(room.pk))

    users = {
        "anon": None,
        "bob": world.bob,
        "alice": world.alice,
        "ivan": ivan,
        "dave": world.dave,
        "lena": User.objects.get(username="lena"),
        "mallory": world.mallory,
        "rita": world.rita,
        "oper": operator,
    }
    orgs = {
        "bob": "pharma",
        "alice": "charite",
        "ivan": "charite",
        "dave": "charite",
        "lena": "leiden",
        "mallory": "mallory",
    }
    return Scene(
        room=room,
        users=users,
        orgs=orgs,
        draft=draft,
        pending=pending,
        ready=ready,
        ran=ran,
        job=job,
        invitation=invitation,
        approval=ready.approvals.get(organization=world.charite),
        token=account_services.issue_token(user=world.bob, name="bob's script").token,
        alice_passkey=ready.approvals.get(organization=world.charite).credential_id,
    )


def approve(world, query: Query) -> Query:
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    query.refresh_from_db()
    return query


def url_of(name: str, s: Scene) -> str:
    room, job = s.room.slug, s.job.pk
    dataset = "datasets/charite/patients/"
    log = room_log_name(s.room.pk)
    paths = {
        "dashboard": "/",
        "healthz": "/healthz",
        "favicon": "/favicon.ico",
        "metrics": "/metrics",
        "login": "/login/",
        "logout": "/logout/",
        "passkey-sign-in-options": "/login/passkey/options/",
        "passkey-sign-in": "/login/passkey/",
        "dataset-list": "/datasets/",
        "dataset-create": "/datasets/new/",
        "dataset-schema": "/datasets/schema/",
        "dataset-detail": f"/{dataset}",
        "version-create": f"/{dataset}versions/new/",
        "policy-edit": f"/{dataset}policy/",
        "dataset-suspension": f"/{dataset}suspension/",
        "room-list": "/rooms/",
        "room-create": "/rooms/new/",
        "room-detail": f"/rooms/{room}/",
        "room-invite": f"/rooms/{room}/invite/",
        "room-respond": f"/rooms/{room}/invitations/{s.invitation.pk}/",
        "room-contribute": f"/rooms/{room}/contribute/",
        "participation-suspension": f"/rooms/{room}/participation/suspension/",
        "room-budget": f"/rooms/{room}/budget/",
        "site-api-claim": f"/site-api/jobs/{job}/claim",
        "site-api-lease": f"/site-api/jobs/{job}/lease",
        "site-api-progress": f"/site-api/jobs/{job}/progress",
        "site-api-attestation": f"/site-api/jobs/{job}/attestation",
        "site-api-charge": f"/site-api/jobs/{job}/charge",
        "site-api-key-released": f"/site-api/jobs/{job}/key-released",
        "site-api-release": f"/site-api/jobs/{job}/release",
        "site-api-fail": f"/site-api/jobs/{job}/fail",
        "site-api-placement": f"/site-api/jobs/{job}/placement",
        # A step id no site holds: the signature is refused before any lookup.
        **{
            f"site-api-step-{act}": f"/site-api/steps/{job}/{act}"
            for act in (
                "claim",
                "delivery",
                "shares-may-move",
                "complete",
                "lease",
                "progress",
                "key-released",
                "release",
                "fail",
            )
        },
        "query-create": f"/rooms/{room}/queries/new/",
        "query-plan": f"/rooms/{room}/queries/plan/",
        "query-detail": f"/rooms/{room}/queries/{s.draft.pk}/",
        "query-edit": f"/rooms/{room}/queries/{s.draft.pk}/edit/",
        "query-submit": f"/rooms/{room}/queries/{s.draft.pk}/submit/",
        "query-revise": f"/rooms/{room}/queries/{s.pending.pk}/revise/",
        "query-decide": f"/rooms/{room}/queries/{s.pending.pk}/decide/",
        "approval-revoke": f"/rooms/{room}/queries/{s.ready.pk}/approvals/{s.approval.pk}/revoke/",
        "inbox": "/approvals/",
        "job-run": f"/rooms/{room}/queries/{s.ready.pk}/run/",
        "job-detail": f"/rooms/{room}/jobs/{job}/",
        "job-cancel": f"/rooms/{room}/jobs/{job}/cancel/",
        "result-detail": f"/rooms/{room}/jobs/{job}/result/",
        "result-download": f"/rooms/{room}/jobs/{job}/result.csv",
        "result-opening": f"/rooms/{room}/jobs/{job}/result/opening.json",
        "result-file": f"/rooms/{room}/jobs/{job}/result/files/extract.csv",
        "result-archive": f"/rooms/{room}/jobs/{job}/result/extract-csv.zip",
        "audit-trail": "/audit/",
        "audit-bundles": "/audit/bundles/",
        "audit-bundle-download": f"/audit/bundles/{room}.zip",
        "audit-bundle-prepare": f"/audit/bundles/{room}/prepare",
        "account-security": "/account/security/",
        "account-token-create": "/account/security/tokens/",
        "account-token-revoke": f"/account/security/tokens/{s.token.pk}/revoke/",
        "account-sign-out-others": "/account/security/sessions/sign-out-others/",
        "api-token": "/api/token/",
        "api-tokens": "/api/tokens/",
        "api-token-detail": f"/api/tokens/{s.token.pk}/",
        "api-organizations": "/api/organizations/",
        "passkeys": "/account/passkeys/",
        "passkey-options": "/account/passkeys/options/",
        "passkey-register": "/account/passkeys/register/",
        "passkey-remove": f"/account/passkeys/{s.alice_passkey}/remove/",
        "organization-credentials": "/organizations/charite/credentials/",
        "organization-credential-remove": (
            f"/organizations/charite/credentials/{s.alice_passkey}/remove/"
        ),
        "api-approval-credentials": "/api/organizations/charite/credentials/",
        "api-approval-credential-remove": (
            f"/api/organizations/charite/credentials/{s.alice_passkey}/remove/"
        ),
        "api-jurisdictions": "/api/jurisdictions/",
        "api-sites": "/api/sites/",
        "api-datasets": "/api/datasets/",
        "api-infer-schema": "/api/datasets/infer-schema/",
        "api-dataset": f"/api/{dataset}",
        "api-dataset-versions": f"/api/{dataset}versions/",
        "api-policy": f"/api/{dataset}policy/",
        "api-dataset-suspension": f"/api/{dataset}suspension/",
        "api-policy-history": f"/api/{dataset}policies/",
        "api-rooms": "/api/rooms/",
        "api-room": f"/api/rooms/{room}/",
        "api-invite": f"/api/rooms/{room}/invitations/",
        "api-accept": f"/api/rooms/{room}/accept/",
        "api-decline": f"/api/rooms/{room}/decline/",
        "api-contribute": f"/api/rooms/{room}/datasets/",
        "api-participation-suspension": f"/api/rooms/{room}/participation/suspension/",
        "api-budget": f"/api/rooms/{room}/budget/",
        "api-queries": f"/api/rooms/{room}/queries/",
        "api-query-plan": f"/api/rooms/{room}/queries/plan/",
        "api-query": f"/api/rooms/{room}/queries/{s.draft.pk}/",
        "api-query-submit": f"/api/rooms/{room}/queries/{s.draft.pk}/submit/",
        "api-query-approve": f"/api/rooms/{room}/queries/{s.pending.pk}/approve/",
        "api-query-reject": f"/api/rooms/{room}/queries/{s.pending.pk}/reject/",
        "api-approval-revoke": (
            f"/api/rooms/{room}/queries/{s.ready.pk}/approvals/{s.approval.pk}/revoke/"
        ),
        "api-inbox": "/api/approvals/",
        "api-query-run": f"/api/rooms/{room}/queries/{s.ready.pk}/run/",
        "api-job": f"/api/rooms/{room}/jobs/{job}/",
        "api-job-cancel": f"/api/rooms/{room}/jobs/{job}/cancel/",
        "api-result": f"/api/rooms/{room}/jobs/{job}/result/",
        "api-result-file": f"/api/rooms/{room}/jobs/{job}/result/files/extract.csv",
        "api-audit-events": "/api/audit/events/",
        "api-audit-checkpoint": f"/api/audit/checkpoints/?log={log}",
        "api-audit-consistency": f"/api/audit/consistency/?log={log}&first=1",
        "api-audit-witness": "/api/audit/witness/",
        "api-audit-bundles": "/api/audit/bundles/",
        "api-audit-bundle": f"/api/audit/bundles/{room}/",
        "api-schema": "/api/schema/",
        "api-docs": "/api/docs/",
        "api-redoc": "/api/redoc/",
        "admin:index": "/operator/",
        "admin:login": "/operator/login/",
    }
    return paths[name]


def body_of(name: str, persona: str, s: Scene) -> dict:
    """The few write requests that need a body to reach their rule: the persona's own
    organisation where the request names one."""
    org = s.orgs.get(persona, "")
    if name in ("api-rooms", "api-datasets"):
        return {"organization": org}
    if name == "query-decide":
        return {"organization": org, "decision": "approve"}
    if name == "passkey-options":
        return {"organization": org}
    if name in ("api-query-approve", "api-query-reject") and org:
        # The persona's own passkey answers the decision's challenge: the rule decides.
        organization = Organization.objects.get(slug=org)
        approve = name == "api-query-approve"
        return factories.decision_body(s.pending, organization, s.users[persona], approve)
    if name == "room-respond":
        return {"decision": "accept"}
    if name == "api-audit-witness":
        return {"organization": org, "log": room_log_name(s.room.pk)}
    return {}


def client_of(user: User | None, api: bool) -> Client:
    if api:
        return factories.api(user) if user else APIClient()
    client = Client()
    if user:
        client.force_login(user)
    return client


def ask(s: Scene, persona: str, name: str, method: str, clients: dict | None = None) -> int:
    """The status `persona` gets; whatever the request changed is rolled back. `clients`
    keeps one logged-in client per persona and door (logging out needs its own)."""
    user = s.users[persona]
    path = url_of(name, s)
    api = path.startswith("/api/")
    if clients is None or name == "logout":
        client = client_of(user, api)
    else:
        client = clients.setdefault((persona, api), client_of(user, api))
    data = body_of(name, persona, s)
    kwargs = {}
    if method != "GET":
        kwargs = {"data": data}
        if api:
            kwargs["format"] = "multipart" if name == "api-infer-schema" else "json"
    with transaction.atomic():
        status = getattr(client, method.lower())(path, **kwargs).status_code
        transaction.set_rollback(True)
    return status


def expected(row: str) -> dict[str, int]:
    codes = [int(code) for code in row.split()]
    assert len(codes) == len(PERSONAS)
    return dict(zip(PERSONAS, codes, strict=True))


def test_every_persona_gets_the_status_the_matrix_says_on_every_url(scene):
    wrong, clients = [], {}
    for (name, method), row in MATRIX.items():
        for persona, want in expected(row).items():
            got = ask(scene, persona, name, method, clients)
            if got != want:
                wrong.append(f"{method} {name} as {persona}: {got}, expected {want}")
    assert not wrong, "\n".join(wrong)


def url_patterns(resolver: URLResolver | None = None, namespace: str | None = None):
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            yield from url_patterns(pattern, pattern.namespace or namespace)
        else:
            assert isinstance(pattern, URLPattern)
            yield pattern, namespace


def test_every_url_pattern_has_a_row():
    listed = {name for name, _ in MATRIX}
    missing = [
        str(pattern.pattern)
        for pattern, namespace in url_patterns()
        if namespace != ADMIN_NAMESPACE and pattern.name not in listed
    ]
    assert not missing, f"URLs without a row in the authorization matrix: {missing}"


def test_every_row_names_a_url_that_exists():
    names = {p.name for p, ns in url_patterns() if ns != ADMIN_NAMESPACE}
    assert {name for name, _ in MATRIX if not name.startswith("admin:")} <= names


# ---- The two attacks of issue #16, each on its own ---------------------------------------


def test_an_analyst_of_another_member_cannot_save_the_authors_draft_on_the_page(world, scene):
    ivan, draft = scene.users["ivan"], scene.draft
    before = (draft.title, draft.sql, sorted(draft.receivers.values_list("slug", flat=True)))
    client = Client()
    client.force_login(ivan)
    response = client.post(
        f"/rooms/{scene.room.slug}/queries/{draft.pk}/edit/",
        {
            "title": "Charité's now",
            "purpose": "Taken over",
            "sql": "SELECT age_band, COUNT(*) AS n FROM charite.patients GROUP BY age_band",
            "requested_mechanism": "auto",
            "epsilon": "0.5",
            "delta": "0",
            "expires_at": (timezone.now() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M"),
            "output_kind": "aggregate",
            "receivers": [world.charite.pk],
        },
    )
    assert response.status_code == 403
    draft.refresh_from_db()
    after = (draft.title, draft.sql, sorted(draft.receivers.values_list("slug", flat=True)))
    assert after == before == ("Draft of pharma", draft.sql, ["pharma"])
    assert draft.author_organization == world.pharma
    # The API refuses the same edit, with the same rule.
    response = factories.api(ivan).patch(
        f"/api/rooms/{scene.room.slug}/queries/{draft.pk}/",
        {"title": "Charité's now", "receivers": ["charite"]},
        format="json",
    )
    assert response.status_code == 403
    assert "Only analysts of Pharma Research" in response.json()["error"]["message"]
    draft.refresh_from_db()
    assert draft.title == "Draft of pharma"


def test_an_invitee_reads_no_queries_jobs_or_budget_until_it_joins(scene):
    lena, room = scene.users["lena"], scene.room.slug
    page = Client()
    page.force_login(lena)
    api = factories.api(lena)
    refused = [
        page.get(f"/rooms/{room}/queries/{scene.pending.pk}/"),
        page.get(f"/rooms/{room}/budget/"),
        page.get(f"/rooms/{room}/jobs/{scene.job.pk}/"),
        api.get(f"/api/rooms/{room}/queries/"),
        api.get(f"/api/rooms/{room}/queries/{scene.pending.pk}/"),
        api.get(f"/api/rooms/{room}/budget/"),
        api.get(f"/api/rooms/{room}/jobs/{scene.job.pk}/"),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    for response in refused:
        assert b"Waiting for owners" not in response.content
        assert b"remaining" not in response.content
    # What it does see, to decide: the room, who invited it, the members and the datasets.
    response = page.get(f"/rooms/{room}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Outcomes study" in html and "Invited by bob" in html
    assert "charite.patients" in html and "usz.patients" in html
    assert "Waiting for owners" not in html and "Privacy budget" not in html
    detail = api.get(f"/api/rooms/{room}/").json()
    assert {m["organization"]: m["invited_by"] for m in detail["memberships"]}["leiden"] == "bob"
    assert {c["dataset"] for c in detail["contributions"]} == {"charite.patients", "usz.patients"}


LINK = re.compile(r'href="(/[^"#?]*)')


def test_no_persona_is_shown_a_link_to_a_page_that_refuses_it(scene):
    """What a page offers is what its reader may do: following every link each persona is
    shown, from the dashboard on, never ends on a refusal or a missing page."""
    skipped = ("/logout/", "/static/", "/operator/", ".zip", ".json", ".csv")
    refused = []
    for persona in PERSONAS[1:-1]:
        client = client_of(scene.users[persona], api=False)
        seen, waiting = set(), ["/"]
        while waiting:
            path = waiting.pop()
            if path in seen or any(part in path for part in skipped):
                continue
            seen.add(path)
            response = client.get(path)
            if response.status_code >= 400:
                refused.append(f"{persona}: {path} {response.status_code}")
            elif response.status_code == 200 and "html" in response["Content-Type"]:
                waiting += LINK.findall(response.content.decode())
    assert not refused, "\n".join(refused)
