"""Builders for test data, made through the real services (as a user would make it)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from jobs import services as room_services
from jobs.models import Room
from parties import services
from parties.models import Authority, DatasetVersion, Jurisdiction, Organization

AGE_BANDS = ["0-17", "18-39", "40-64", "65+"]
SEXES = ["F", "M"]
DIAGNOSES = ["circulatory", "respiratory", "neoplasms", "injury", "other"]


def patients_csv(path: Path, rows: int = 200, seed: int = 1, id_offset: int = 0) -> Path:
    rng = random.Random(seed)
    lines = ["patient_id,person_hash,age_band,sex,diagnosis,length_of_stay,cost"]
    for i in range(rows):
        lines.append(
            f"{id_offset + i},h{rng.getrandbits(48):012x},{rng.choice(AGE_BANDS)},"
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


def organization(slug: str, name: str, **members: str) -> Organization:
    """`members` maps username to role."""
    org = services.create_organization(slug=slug, name=name)
    for username, role in members.items():
        account = User.objects.filter(username=username).first() or user(username)
        services.add_membership(organization=org, user=account, role=role)
    return org


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


def api(user: User) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
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
        zurich = organization("usz", "University Hospital Zurich", carol="owner")
        pharma = organization("pharma", "Pharma Research", bob="analyst")
        outsider = organization("mallory-inc", "Mallory Inc", mallory="owner")
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
        room = room_services.create_room(
            organization=self.charite,
            slug=slug,
            name="Cardiology outcomes",
            purpose="Research",
            by=self.alice,
        )
        room_services.invite_organization(
            room=room, organization=self.zurich, acting_for=self.charite, by=self.alice
        )
        return room
