"""The demo collaboration: hospitals in Berlin (EU), Zurich (CH) and London (UK) and a
pharmaceutical analyst (US), with an EU regulator, built through the same services a user would
call. Two approved queries run at once: a UNION ALL of Berlin and Zurich in the simulated TEE,
and a UNION ALL of all three hospitals under MPC (input steps at each hospital's own site,
three compute parties in Paris, Geneva and Manchester).

Every approval in the demo is an owner's own passkey assertion: each owner is seeded with a demo
software authenticator (cleanroom.testing.SoftwareAuthenticator, its key in
var/demo-devices/<username>.json) registered as that owner's passkey, since no browser is at
hand while the demo sets up. It stands in for the owner's device; the platform holds no key."""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from cleanroom.audit.verifier.approvals import approval_challenge
from cleanroom.testing import SoftwareAuthenticator
from jobs.execution.lifecycle import run_query
from jobs.models import Approval, Job, Query, Room
from jobs.queries.canonical import approval_message
from jobs.queries.services import decide_query, save_draft, submit_query
from jobs.rooms.services import (
    contribute_dataset,
    create_room,
    invite_organization,
    respond_to_invitation,
)
from parties import credentials, services
from parties.models import Authority, Jurisdiction, Organization

AGE_BANDS = ["0-17", "18-39", "40-64", "65-79", "80+"]


SEXES = ["F", "M"]


DIAGNOSES = ["circulatory", "respiratory", "neoplasms", "digestive", "injury", "other"]


SCHEMA: list[dict[str, Any]] = [
    # A pseudonymous person id, the same at every hospital that treated the person: the privacy
    # unit, and the key the owners' policies allow joins on.
    {"name": "person_id", "type": "string", "role": "unit"},
    {"name": "age_band", "type": "string", "role": "dimension", "domain": AGE_BANDS},
    {"name": "sex", "type": "string", "role": "dimension", "domain": SEXES},
    {"name": "diagnosis", "type": "string", "role": "dimension", "domain": DIAGNOSES},
    {"name": "length_of_stay", "type": "integer", "role": "measure", "lower": 0, "upper": 60},
    {"name": "cost", "type": "float", "role": "measure", "lower": 0, "upper": 200000},
    {"name": "readmitted", "type": "boolean", "role": "other"},
]


LOGINS_FILE = "demo-logins.json"


DEVICES_DIR = "demo-devices"


DEVICE_NAME = "Demo software authenticator (var/demo-devices)"


@dataclass(frozen=True)
class Person:
    username: str
    name: str
    role: str
    organization: str | None


PEOPLE = [
    Person("alice", "Alice Becker", "owner", "charite"),
    Person("dave", "Dave Hoffmann", "auditor", "charite"),
    Person("carol", "Carol Meier", "owner", "usz"),
    Person("uma", "Uma Patel", "owner", "barts"),
    Person("bob", "Bob Nguyen", "analyst", "novapharm"),
    Person("nina", "Nina Park", "owner", "novapharm"),
    Person("rita", "Rita Rossi", "regulator", None),
]


def generate_patients(path: Path, *, rows: int, seed: int, site: str, shared: int) -> Path:
    """Synthetic patients, one stay each. The first `shared` people also appear at the other
    hospitals (same person_id), so joins across hospitals have something to find."""
    rng = random.Random(seed)  # noqa: S311 - reproducible demo data, not secrets
    lines = ["person_id,age_band,sex,diagnosis,length_of_stay,cost,readmitted"]
    for i in range(rows):
        person = i if i < shared else f"{site}-{i}"
        person_id = hashlib.sha256(f"demo-person-{person}".encode()).hexdigest()[:32]
        age = rng.choices(AGE_BANDS, weights=[8, 22, 32, 24, 14])[0]
        diagnosis = rng.choices(DIAGNOSES, weights=[24, 16, 14, 15, 12, 19])[0]
        stay = min(60, int(rng.expovariate(1 / (4 + 2 * AGE_BANDS.index(age)))))
        cost = round(min(200000.0, 900 * (stay + 1) * rng.lognormvariate(0, 0.4)), 2)
        lines.append(
            f"{person_id},{age},{rng.choice(SEXES)},{diagnosis},{stay},{cost},"
            f"{'true' if rng.random() < 0.12 else 'false'}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def _user(person: Person, password: str) -> User:
    first, last = person.name.split(" ", 1)
    user = User.objects.create_user(
        person.username, password=password, first_name=first, last_name=last
    )
    return user


def _device_path(username: str) -> Path:
    return settings.VAR_DIR / DEVICES_DIR / f"{username}.json"


def _keep(username: str, device: SoftwareAuthenticator) -> None:
    path = _device_path(username)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(json.dumps(device.to_json(), indent=1))
    path.chmod(0o600)


def _register_demo_passkey(user: User, organization: Organization) -> None:
    """Register the owner's demo software authenticator as their passkey, through the same
    WebAuthn registration a browser's would take."""
    _, challenge = credentials.passkey_registration_options(user=user, organization=organization)
    device = SoftwareAuthenticator(
        rp_id=settings.WEBAUTHN_RP_ID, origin=settings.WEBAUTHN_ORIGINS[0]
    )
    credentials.register_passkey(
        user=user,
        organization=organization,
        name=DEVICE_NAME,
        credential=device.create(challenge),
        challenge=challenge,
    )
    _keep(user.username, device)


def _approve(query: Query, organization: Organization, owner: User, comment: str) -> Approval:
    """The owner approves with their demo software authenticator's assertion."""
    device = SoftwareAuthenticator.from_json(json.loads(_device_path(owner.username).read_text()))
    message = approval_message(Query.objects.get(pk=query.pk), organization, "approve")
    response = device.get(approval_challenge(message))
    _keep(owner.username, device)  # its signature counter
    return decide_query(
        query=query,
        organization=organization,
        by=owner,
        approve=True,
        comment=comment,
        response=response,
    )


def is_seeded() -> bool:
    return Organization.objects.filter(slug="charite").exists()


def organizations() -> list[Organization]:
    """Every organisation runs its own key service: the hospitals for their datasets' keys,
    NovaPharm for the results released to it."""
    return list(Organization.objects.order_by("slug"))


def logins() -> dict[str, str]:
    path = settings.VAR_DIR / LOGINS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def seed(
    *,
    patients_per_hospital: int = 4000,
    start_key_services: Callable[[list[Organization]], object] = lambda organizations: None,
) -> list[Job]:
    """Create the collaboration and start its approved queries (the jobs it returns: the TEE's,
    then the MPC's). Passwords are random per checkout, kept in var/. Once the organisations
    exist, `start_key_services` starts their own key services, which wrap the hospitals'
    datasets' keys and hold the receivers' results keys."""
    passwords = {p.username: secrets.token_urlsafe(9) for p in PEOPLE}
    with transaction.atomic():
        orgs = {
            "charite": services.create_organization(
                slug="charite", name="Charité - Universitätsmedizin Berlin", jurisdiction="EU"
            ),
            "usz": services.create_organization(
                slug="usz", name="University Hospital Zurich", jurisdiction="CH"
            ),
            "barts": services.create_organization(
                slug="barts", name="Barts Health NHS Trust", jurisdiction="UK"
            ),
            "novapharm": services.create_organization(
                slug="novapharm", name="NovaPharm Research", jurisdiction="US"
            ),
        }
        users = {p.username: _user(p, passwords[p.username]) for p in PEOPLE}
        for person in PEOPLE:
            if person.organization:
                services.add_membership(
                    organization=orgs[person.organization],
                    user=users[person.username],
                    role=person.role,
                )
        for person in PEOPLE:
            if person.role == "owner" and person.organization:
                _register_demo_passkey(users[person.username], orgs[person.organization])
        regulator = Authority.objects.create(slug="eu-dpa", name="EU Data Protection Authority")
        regulator.jurisdictions.set([Jurisdiction.objects.get(code="EU")])
        regulator.members.add(users["rita"])

    start_key_services(list(orgs.values()))
    datasets = {}
    with tempfile.TemporaryDirectory() as tmp:
        for slug, owner, jurisdiction, seed_, name in (
            ("charite", "alice", "EU", 11, "Inpatient stays 2025"),
            ("usz", "carol", "CH", 12, "Inpatient stays 2025"),
            ("barts", "uma", "UK", 13, "Inpatient stays 2025"),
        ):
            csv = generate_patients(
                Path(tmp) / f"{slug}.csv",
                rows=patients_per_hospital,
                seed=seed_,
                site=slug,
                shared=patients_per_hospital // 4,
            )
            version = services.register_dataset(
                organization=orgs[slug],
                slug="inpatients",
                name=name,
                jurisdiction=jurisdiction,
                upload=csv,
                filename=csv.name,
                schema=SCHEMA,
                by=users[owner],
                description="Generated patients for the demo: no real person is in it.",
            )
            services.update_policy(
                dataset=version.dataset,
                by=users[owner],
                allowed_join_keys=["person_id"],
                allowed_dimensions=["age_band", "sex", "diagnosis"],
                allowed_measures=["length_of_stay", "cost"],
                allowed_filters=["age_band", "sex", "diagnosis"],
                allowed_aggregates=["count", "sum", "avg"],
                allowed_mechanisms=["mpc", "tee"],
                allowed_receivers=[orgs["novapharm"], orgs[slug]],
                min_group_size=10,
                # L: each generated patient has exactly one stay (a person_id appears once per
                # hospital), so 1 keeps every row; a larger bound would keep nothing more and
                # only multiply the noise.
                max_rows_per_unit=1,
                max_epsilon_per_query=Decimal("1"),
                total_epsilon=Decimal("5"),
                # DP synthetic extracts are open (δ for them too); SDV's non-DP methods are not,
                # so asking for one shows the refusal naming each owner.
                synthetic_allowed=True,
                total_delta=Decimal("0.00001"),
            )
            datasets[slug] = version.dataset

    study = create_room(
        organization=orgs["novapharm"],
        slug="cardio-outcomes",
        name="Cardiology outcomes study",
        purpose="Length of stay and cost of inpatient care by age band, sex and diagnosis, "
        "across Berlin, Zurich and London.",
        by=users["bob"],
    )
    for hospital, owner in (("charite", "alice"), ("usz", "carol"), ("barts", "uma")):
        membership = invite_organization(
            room=study, organization=orgs[hospital], acting_for=orgs["novapharm"], by=users["bob"]
        )
        respond_to_invitation(membership=membership, accept=True, by=users[owner])
        contribute_dataset(room=study, dataset=datasets[hospital], by=users[owner])

    approved, across_three = _propose_queries(study, users, orgs)

    # A second room with an invitation left open, for a new user to accept.
    followup = create_room(
        organization=orgs["charite"],
        slug="readmissions",
        name="Readmissions follow-up",
        purpose="Which stays end in a readmission within 30 days.",
        by=users["alice"],
    )
    invite_organization(
        room=followup, organization=orgs["usz"], acting_for=orgs["charite"], by=users["alice"]
    )

    path = settings.VAR_DIR / LOGINS_FILE
    path.write_text(json.dumps(passwords, indent=2))
    path.chmod(0o600)
    return [
        run_query(query=approved, by=users["bob"]),
        run_query(query=across_three, by=users["bob"]),
    ]


UNION_QUERY = """SELECT u.age_band, COUNT(*) AS stays, AVG(u.length_of_stay) AS mean_stay
FROM (SELECT age_band, length_of_stay FROM charite.inpatients
      UNION ALL
      SELECT age_band, length_of_stay FROM usz.inpatients) AS u
GROUP BY u.age_band"""


THREE_COUNTRIES_QUERY = """SELECT u.age_band, COUNT(*) AS stays, AVG(u.length_of_stay) AS mean_stay,
       AVG(u.cost) AS mean_cost
FROM (SELECT age_band, length_of_stay, cost FROM charite.inpatients
      UNION ALL
      SELECT age_band, length_of_stay, cost FROM usz.inpatients
      UNION ALL
      SELECT age_band, length_of_stay, cost FROM barts.inpatients) AS u
GROUP BY u.age_band"""


JOIN_QUERY = """SELECT b.diagnosis, COUNT(*) AS patients, AVG(z.cost) AS mean_cost_in_zurich
FROM charite.inpatients AS b
JOIN usz.inpatients AS z ON b.person_id = z.person_id
WHERE b.age_band IN ('65-79', '80+')
GROUP BY b.diagnosis"""


def _propose_queries(
    room: Room, users: dict[str, User], orgs: dict[str, Organization]
) -> tuple[Query, Query]:
    """Two approved queries (the TEE's across two hospitals, the MPC's across three), and one
    waiting in the Berlin and Zurich owners' approvals inboxes."""
    expiry = timezone.now() + timedelta(days=30)
    common: dict[str, Any] = {
        "room": room,
        "acting_for": orgs["novapharm"],
        "by": users["bob"],
        "receivers": [orgs["novapharm"]],
        "expires_at": expiry,
    }
    approved = save_draft(
        title="Length of stay by age band",
        purpose="Compare inpatient length of stay by age band across Berlin and Zurich to plan "
        "a cardiology trial's follow-up visits.",
        sql=UNION_QUERY,
        epsilon=Decimal("0.5"),
        requested_mechanism=Query.Mechanism.TEE,
        **common,
    )
    approved = submit_query(query=approved, by=users["bob"])
    for hospital, owner in (("charite", "alice"), ("usz", "carol")):
        _approve(approved, orgs[hospital], users[owner], "Within our policy; aggregate only.")
    waiting = save_draft(
        title="Costs of older patients treated in both cities",
        purpose="Estimate the cost in Zurich of older patients also treated in Berlin, by "
        "diagnosis, for a health-economics model.",
        sql=JOIN_QUERY,
        epsilon=Decimal("0.8"),
        **common,
    )
    submit_query(query=waiting, by=users["bob"])
    across_three = save_draft(
        title="Length of stay and cost across three countries",
        purpose="Compare inpatient length of stay and cost by age band across Berlin, Zurich "
        "and London, where no hospital's data may leave its own country.",
        sql=THREE_COUNTRIES_QUERY,
        epsilon=Decimal("0.5"),
        requested_mechanism=Query.Mechanism.MPC,
        **common,
    )
    across_three = submit_query(query=across_three, by=users["bob"])
    for hospital, owner in (("charite", "alice"), ("usz", "carol"), ("barts", "uma")):
        _approve(
            across_three,
            orgs[hospital],
            users[owner],
            "Under MPC our rows stay here; aggregate only.",
        )
    return approved, across_three
