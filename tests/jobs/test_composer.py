"""What the composer page gives its SQL editor: the names to complete (only what each policy
allows, for the uses it allows) and a style nonce for CodeMirror's styles, on that page alone."""

import json
import re

import pytest
from django.test import Client

from jobs.planning.planner import completion_schema
from jobs.rooms.services import contribute_dataset
from parties import services

pytestmark = pytest.mark.django_db


@pytest.fixture
def study(world, tmp_path):
    room = world.study(tmp_path)
    dataset = world.zurich.datasets.get(slug="patients")
    services.update_policy(dataset=dataset, by=world.carol, allowed_measures=["length_of_stay"])
    contribute_dataset(room=room, dataset=dataset, by=world.carol)
    return room


def columns(schema, name):
    dataset = next(d for d in schema if d["name"] == name)
    return {column["name"]: column["uses"] for column in dataset["columns"]}


def test_completion_offers_each_column_for_the_uses_its_contributed_policy_allows(study):
    schema = completion_schema(study)
    assert [d["name"] for d in schema] == ["charite.patients", "usz.patients"]
    filters = ["dimension", "filter"]
    assert columns(schema, "charite.patients") == {
        "person_hash": ["join_key"],
        "age_band": filters,
        "sex": filters,
        "diagnosis": filters,
        "length_of_stay": ["measure"],
        "cost": ["measure"],
    }
    # Zurich's policy, as contributed to the room, no longer allows cost; the privacy unit is
    # offered nowhere (neither policy lists it as a join key).
    assert "cost" not in columns(schema, "usz.patients")
    assert all("patient_id" not in columns(schema, d["name"]) for d in schema)


def policy_of(response):
    header = response["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in header.split(";"))


def test_the_composer_alone_gets_a_fresh_style_nonce_and_its_completion_data(world, study):
    client = Client()
    client.force_login(world.bob)
    nonces = []
    for _ in range(2):
        response = client.get(f"/rooms/{study.slug}/queries/new/")
        page = response.content.decode()
        policy = policy_of(response)
        assert policy["script-src"] == "'self'"
        nonce = re.fullmatch(r"'self' 'nonce-([A-Za-z0-9+/=]+)'", policy["style-src"]).group(1)
        # The nonce goes to the editor's script, never to an inline script or style.
        assert re.findall(r'nonce="([^"]+)"', page) == [nonce]
        assert re.search(rf'<script src="[^"]+/js/composer\.js" nonce="{re.escape(nonce)}"', page)
        assert 'style="' not in page and "<style" not in page
        data = re.search(r'<script id="completion-schema" type="[^"]+">(.*?)</script>', page)
        assert json.loads(data.group(1)) == completion_schema(study)
        nonces.append(nonce)
    assert nonces[0] != nonces[1]
    for path in (f"/rooms/{study.slug}/", "/approvals/", "/"):
        assert policy_of(client.get(path))["style-src"] == "'self'"
