"""Builders for test data, made through the real services (as a user would make it)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.tokens import new_secret
from cleanroom.audit.verifier.approvals import approval_challenge
from cleanroom.testing import SoftwareAuthenticator
from jobs.models import Approval, Query, Room
from jobs.queries.canonical import approval_message
from jobs.queries.services import decide_query, save_draft, submit_query
from jobs.rooms.services import (
    contribute_dataset,
    create_room,
    invite_organization,
    respond_to_invitation,
)
from parties import credentials, services
from parties.models import Authority, DatasetVersion, Jurisdiction, Organization
from parties.selectors import passkeys_of

AGE_BANDS = ["0-17", "18-39", "40-64", "65+"]
SEXES = ["F", "M"]
DIAGNOSES = ["circulatory", "respiratory", "neoplasms", "injury", "other"]


def patients_csv(path: Path, rows: int = 200, seed: int = 1, id_offset: int = 0) -> Path:
    """Generated patients; the first half are the same people in every file (same person_hash),
    so joins across hospitals find them."""
    rng = random.Random(seed)
    lines = ["patient_id,person_hash,age_band,sex,diagnosis,length_of_stay,cost"]
    for i in range(rows):
        person = f"p{i:011x}" if i < rows // 2 else f"h{rng.getrandbits(48):012x}"
        lines.append(
            f"{id_offset + i},{person},{rng.choice(AGE_BANDS)},"
            f"{rng.choice(SEXES)},{rng.choice(DIAGNOSES)},{rng.randint(0, 30)},"
            f"{rng.uniform(100, 50000):.2f}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def patients_schema() -> list[dict]:
    return [
        {"name": "patient_id", "type": "integer", "role": "unit"},
        {"name": "person_hash", "type": "string", "role": "join_key"},
        {"name": "age_band", "type": "string", "role": "dimension", "domain": AGE_BANDS},
        {"name": "sex", "type": "string", "role": "dimension", "domain": SEXES},
        {"name": "diagnosis", "type": "string", "role": "dimension", "domain": DIAGNOSES},
        {"name": "length_of_stay", "type": "integer", "role": "measure", "lower": 0, "upper": 60},
        {"name": "cost", "type": "float", "role": "measure", "lower": 0, "upper": 100000},
    ]


def user(username: str) -> User:
    return User.objects.create_user(username=username, password="correct-horse-battery")


def organization(slug: str, name: str, home: str = "EU", **members: str) -> Organization:
    """`members` maps username to role; `home` is the organisation's jurisdiction."""
    org = services.create_organization(slug=slug, name=name, jurisdiction=home)
    for username, role in members.items():
        account = User.objects.filter(username=username).first() or user(username)
        services.add_membership(organization=org, user=account, role=role)
    return org


# The owners' devices in the tests: each registered passkey's software authenticator, by id.
DEVICES: dict[bytes, SoftwareAuthenticator] = {}


def authenticator() -> SoftwareAuthenticator:
    """A new device for this deployment's relying party, registered nowhere."""
    return SoftwareAuthenticator(rp_id=settings.WEBAUTHN_RP_ID, origin=settings.WEBAUTHN_ORIGINS[0])


def register_passkey(user: User, org: Organization, name: str = "Laptop") -> SoftwareAuthenticator:
    """Register a new passkey of `user` for `org`, as the passkeys page does."""
    _, challenge = credentials.passkey_registration_options(user=user, organization=org)
    device = authenticator()
    credentials.register_passkey(
        user=user,
        organization=org,
        name=name,
        credential=device.create(challenge),
        challenge=challenge,
    )
    DEVICES[device.credential_id] = device
    return device


def passkey(user: User, org: Organization) -> SoftwareAuthenticator:
    """`user`'s passkey for `org`, registered on first use; where `user` may not approve for
    `org`, a device registered nowhere (which the server refuses)."""
    for credential_id in (
        passkeys_of(user).filter(organization=org).values_list("credential_id", flat=True)
    ):
        if bytes(credential_id) in DEVICES:
            return DEVICES[bytes(credential_id)]
    try:
        return register_passkey(user, org)
    except PermissionDenied:
        return authenticator()


def assertion(query: Query, org: Organization, user: User, approve: bool = True) -> dict:
    """`user`'s passkey assertion of the decision, as the browser hands it to the server."""
    query = Query.objects.get(pk=query.pk)
    message = approval_message(query, org, "approve" if approve else "reject")
    return passkey(user, org).get(approval_challenge(message))


def decision_body(
    query: Query, org: Organization, user: User, approve: bool = True, **fields
) -> dict:
    """An API decision's JSON body, with `user`'s passkey assertion."""
    return {**fields, "assertion": assertion(query, org, user, approve)}


def decide(
    *, query: Query, organization: Organization, by: User, approve: bool = True, comment: str = ""
) -> Approval:
    """Decide as the owner would: with `by`'s own passkey, through the real service."""
    return decide_query(
        query=query,
        organization=organization,
        by=by,
        approve=approve,
        comment=comment,
        response=assertion(query, organization, by, approve),
    )


def dataset(
    org: Organization, owner: User, path: Path, *, slug: str = "patients", jurisdiction: str = "EU"
) -> DatasetVersion:
    return services.register_dataset(
        organization=org,
        slug=slug,
        name=slug.title(),
        jurisdiction=jurisdiction,
        upload=path,
        filename=path.name,
        schema=patients_schema(),
        by=owner,
    )


def token_for(user: User) -> str:
    """A credential for the test, as `force_login` is for pages: made without the token service
    (and its audit event, which would interleave with the events a test inspects); the service
    itself is tested in tests/accounts/."""
    made = new_secret()
    ApiToken.objects.create(
        user=user,
        name="tests",
        prefix=made.prefix,
        digest=made.digest,
        expires_at=timezone.now() + timedelta(days=1),
    )
    return made.secret


def api(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return client


@dataclass
class World:
    """Personas: alice owns EU hospital data, carol owns CH hospital data, bob analyses for
    pharma, dave audits the EU hospital, rita regulates the EU, mallory is an outsider."""

    charite: Organization
    zurich: Organization
    pharma: Organization
    outsider: Organization
    alice: User
    carol: User
    bob: User
    dave: User
    rita: User
    mallory: User

    @classmethod
    def build(cls) -> World:
        charite = organization("charite", "Charité Berlin", alice="owner", dave="auditor")
        zurich = organization("usz", "University Hospital Zurich", "CH", carol="owner")
        pharma = organization("pharma", "Pharma Research", "US", bob="analyst")
        outsider = organization("mallory", "Mallory Inc", "US", mallory="owner")
        rita = user("rita")
        authority = Authority.objects.create(slug="edpb", name="EU regulator")
        authority.jurisdictions.set([Jurisdiction.objects.get(code="EU")])
        authority.members.add(rita)
        get = User.objects.get
        return cls(
            charite,
            zurich,
            pharma,
            outsider,
            get(username="alice"),
            get(username="carol"),
            get(username="bob"),
            get(username="dave"),
            rita,
            get(username="mallory"),
        )

    def room(self, slug: str = "cardio") -> Room:
        """A room made by charite with usz invited (not yet answered)."""
        room = create_room(
            organization=self.charite,
            slug=slug,
            name="Cardiology outcomes",
            purpose="Research",
            by=self.alice,
        )
        invite_organization(
            room=room, organization=self.zurich, acting_for=self.charite, by=self.alice
        )
        return room

    def study(self, tmp_path: Path, slug: str = "study", rows: int = 200) -> Room:
        """A room of pharma (analyst bob) with both hospitals' patients (`rows` each)
        contributed, their policies opened for joins and aggregates, results allowed to pharma."""
        room = create_room(
            organization=self.pharma,
            slug=slug,
            name="Outcomes study",
            purpose="Research",
            by=self.bob,
        )
        for org, owner, home, seed in (
            (self.charite, self.alice, "EU", 1),
            (self.zurich, self.carol, "CH", 2),
        ):
            membership = invite_organization(
                room=room, organization=org, acting_for=self.pharma, by=self.bob
            )
            respond_to_invitation(membership=membership, accept=True, by=owner)
            path = patients_csv(tmp_path / f"{org.slug}.csv", rows=rows, seed=seed)
            version = dataset(org, owner, path, jurisdiction=home)
            services.update_policy(
                dataset=version.dataset,
                by=owner,
                allowed_join_keys=["person_hash"],
                allowed_dimensions=["age_band", "sex", "diagnosis"],
                allowed_measures=["length_of_stay", "cost"],
                allowed_filters=["age_band", "sex", "diagnosis"],
                allowed_aggregates=["count", "sum", "avg"],
                allowed_mechanisms=["mpc", "tee"],
                allowed_receivers=[self.pharma, org],
                max_epsilon_per_query=Decimal("1"),
                total_epsilon=Decimal("3"),
            )
            contribute_dataset(room=room, dataset=version.dataset, by=owner)
        return room


UNION_SQL = """SELECT u.age_band, COUNT(*) AS n, AVG(u.length_of_stay) AS mean_stay
FROM (SELECT age_band, length_of_stay FROM charite.patients
      UNION ALL SELECT age_band, length_of_stay FROM usz.patients) AS u
GROUP BY u.age_band"""

JOIN_SQL = """SELECT d.diagnosis, COUNT(*) AS n, SUM(v.cost) AS cost
FROM charite.patients AS d JOIN usz.patients AS v ON d.person_hash = v.person_hash
GROUP BY d.diagnosis"""


def propose(
    room: Room,
    analyst: User,
    organization: Organization,
    *,
    sql: str = UNION_SQL,
    submit: bool = True,
    receivers: list[Organization] | None = None,
    **values,
):
    defaults = {
        "title": "Stay by age band",
        "purpose": "Plan bed capacity",
        "sql": sql,
        "epsilon": Decimal("0.5"),
        "expires_at": timezone.now() + timedelta(days=7),
    }
    defaults.update(values)
    query = save_draft(
        room=room,
        acting_for=organization,
        by=analyst,
        receivers=receivers or [organization],
        **defaults,
    )
    return submit_query(query=query, by=analyst) if submit else query
