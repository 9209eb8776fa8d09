"""The upload page as an owner uses it: the jurisdiction is the organisation's home unless chosen,
a refusal keeps the chosen file (staged, encrypted, for this session only) and every confirmed
setting, and nothing becomes a dataset until an upload passes every check."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings

from parties import uploads
from parties.forms import DatasetForm
from parties.models import Dataset
from tests import factories

pytestmark = pytest.mark.django_db


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def schema_fields(schema: list[dict]) -> dict[str, str]:
    fields = {"columns": str(len(schema))}
    for i, column in enumerate(schema):
        for key in ("name", "type", "role", "lower", "upper"):
            value = column.get(key)
            fields[f"col-{i}-{key}"] = "" if value is None else str(value)
        fields[f"col-{i}-domain"] = "\n".join(map(str, column.get("domain", [])))
    return fields


def details(**extra) -> dict:
    return {"organization": "", "name": "Inpatients", "slug": "inpatients", **extra}


def staged_token(response) -> str:
    match = re.search(rb'name="staged" value="([^"]+)"', response.content)
    assert match, "the page does not carry the kept file"
    return match.group(1).decode()


def staged_files() -> list:
    return sorted(uploads.staging_dir().iterdir())


def test_the_jurisdiction_is_the_organisations_home_not_the_first_option(world):
    page = browser(world.alice).get("/datasets/new/").content.decode()
    select = re.search(r'<select name="jurisdiction".*?</select>', page, re.S).group(0)
    assert re.search(r'<option value="EU" selected>', select)
    assert 'value="" selected' not in select


def test_an_owner_of_organisations_in_two_jurisdictions_must_choose(world):
    form = DatasetForm(organizations=[world.charite, world.zurich])
    assert form["jurisdiction"].value() is None
    html = str(form["jurisdiction"])
    assert '<option value="" selected>Choose where the data is stored</option>' in html
    refused = DatasetForm(
        {"organization": world.charite.pk, "name": "x", "slug": "x"},
        organizations=[world.charite, world.zurich],
    )
    assert not refused.is_valid() and "jurisdiction" in refused.errors


def test_a_refusal_keeps_the_file_and_every_confirmed_setting_and_stores_nothing(
    world, patients_csv
):
    client = browser(world.alice)
    schema = factories.patients_schema()
    schema[0]["role"] = "other"  # no privacy unit: refused
    schema[5] |= {"lower": "0", "upper": "45"}  # the owner's own bound for length_of_stay
    schema[2]["domain"] = ["0-17", "18-39", "40-64", "65+", "unknown"]
    with patients_csv.open("rb") as file:
        response = client.post(
            "/datasets/new/",
            details(organization=world.charite.pk, jurisdiction="EU", file=file)
            | schema_fields(schema),
        )
    page = response.content.decode()
    assert response.status_code == 200
    assert "Declare exactly one column as the privacy unit" in page
    assert "Kept from your last attempt: <strong>patients.csv</strong>" in page
    assert 'name="col-5-upper" value="45"' in page
    assert "65+&#10;unknown</textarea>" in page or "65+\nunknown</textarea>" in page
    assert re.search(r'<option value="other" selected>Other</option>', page.split("col-0-role")[1])
    assert 'value="inpatients"' in page
    assert not Dataset.objects.exists()
    # The kept file is ciphertext; its key is in the owner's session only.
    [kept] = staged_files()
    assert b"circulatory" not in kept.read_bytes() and b"person_hash" not in kept.read_bytes()

    # The owner fixes the unit and uploads without choosing the file again.
    schema[0]["role"] = "unit"
    response = client.post(
        "/datasets/new/",
        details(organization=world.charite.pk, jurisdiction="EU", staged=staged_token(response))
        | schema_fields(schema),
    )
    assert response.status_code == 302
    version = Dataset.objects.get(slug="inpatients").versions.get()
    assert version.row_count == 200
    assert version.columns.get(name="length_of_stay").upper == 45
    assert staged_files() == []


def test_without_javascript_the_schema_is_shown_and_the_file_is_kept(world, patients_csv):
    client = browser(world.alice)
    with patients_csv.open("rb") as file:
        response = client.post(
            "/datasets/new/", details(organization=world.charite.pk, jurisdiction="CH", file=file)
        )
    page = response.content.decode()
    assert "Confirm the schema below, then upload." in page
    assert 'aria-label="Role of patient_id"' in page
    assert not Dataset.objects.exists()
    fields = details(organization=world.charite.pk, jurisdiction="CH")
    fields |= schema_fields(factories.patients_schema()) | {"staged": staged_token(response)}
    assert client.post("/datasets/new/", fields).status_code == 302
    assert Dataset.objects.get(slug="inpatients").jurisdiction.code == "CH"


def test_a_value_refused_deep_in_the_file_keeps_the_file_for_a_corrected_domain(
    world, patients_csv
):
    client = browser(world.alice)
    schema = factories.patients_schema()
    schema[2]["domain"] = ["0-17", "18-39"]  # the file has older patients too
    with patients_csv.open("rb") as file:
        response = client.post(
            "/datasets/new/",
            details(organization=world.charite.pk, jurisdiction="EU", file=file)
            | schema_fields(schema),
        )
    assert "is outside the declared domain" in response.content.decode()
    assert not Dataset.objects.exists()
    schema[2]["domain"] = factories.AGE_BANDS
    fields = details(organization=world.charite.pk, jurisdiction="EU")
    fields |= schema_fields(schema) | {"staged": staged_token(response)}
    assert client.post("/datasets/new/", fields).status_code == 302


def test_another_session_cannot_use_or_delete_a_kept_file(world, patients_csv):
    alice = browser(world.alice)
    schema = factories.patients_schema()
    schema[0]["role"] = "other"
    with patients_csv.open("rb") as file:
        response = alice.post(
            "/datasets/new/",
            details(organization=world.charite.pk, jurisdiction="EU", file=file)
            | schema_fields(schema),
        )
    token = staged_token(response)
    schema[0]["role"] = "unit"
    # The same owner in another browser, and another hospital's owner, try alice's token.
    for thief, org in ((browser(world.alice), world.charite), (browser(world.carol), world.zurich)):
        stolen = thief.post(
            "/datasets/new/",
            details(organization=org.pk, jurisdiction="EU", staged=token) | schema_fields(schema),
        )
        assert "The file you chose is no longer kept" in stolen.content.decode()
    for token_guess in ("../../etc/passwd", f"{token}/../{token}"):
        browser(world.carol).post(
            "/datasets/new/",
            details(organization=world.zurich.pk, jurisdiction="CH", staged=token_guess),
        )
    # A new file sent with alice's token replaces only what the sender's own session kept.
    with patients_csv.open("rb") as file:
        browser(world.carol).post("/datasets/new/", details(staged=token, file=file))
    assert not Dataset.objects.exists()
    assert token in [path.name for path in staged_files()]
    fields = details(organization=world.charite.pk, jurisdiction="EU", staged=token)
    assert alice.post("/datasets/new/", fields | schema_fields(schema)).status_code == 302


def test_a_kept_file_expires(world, patients_csv, monkeypatch):
    client = browser(world.alice)
    schema = factories.patients_schema()
    schema[0]["role"] = "other"
    with patients_csv.open("rb") as file:
        response = client.post(
            "/datasets/new/",
            details(organization=world.charite.pk, jurisdiction="EU", file=file)
            | schema_fields(schema),
        )
    token = staged_token(response)
    monkeypatch.setattr(uploads, "STAGING_TTL", -1)
    schema[0]["role"] = "unit"
    fields = details(organization=world.charite.pk, jurisdiction="EU", staged=token)
    response = client.post("/datasets/new/", fields | schema_fields(schema))
    assert "The file you chose is no longer kept" in response.content.decode()
    assert not Dataset.objects.exists()
    # The next staging sweeps it away.
    with patients_csv.open("rb") as file:
        client.post("/datasets/new/", details(file=file))
    assert token not in [path.name for path in staged_files()]


def test_a_new_version_keeps_its_file_across_a_refusal_too(world, patients_csv):
    factories.dataset(world.charite, world.alice, patients_csv, slug="inpatients")
    client = browser(world.alice)
    url = "/datasets/charite/inpatients/versions/new/"
    schema = factories.patients_schema()
    schema[6] |= {"lower": "5", "upper": "1"}
    with patients_csv.open("rb") as file:
        response = client.post(url, {"file": file} | schema_fields(schema))
    assert "the lower bound must be below the upper" in response.content.decode()
    schema[6] |= {"lower": "0", "upper": "100000"}
    fields = schema_fields(schema) | {"staged": staged_token(response)}
    assert client.post(url, fields).status_code == 302
    assert Dataset.objects.get(slug="inpatients").versions.count() == 2


@override_settings(FILE_UPLOAD_HANDLERS=["django.core.files.uploadhandler.MemoryFileUploadHandler"])
def test_an_upload_held_in_memory_is_refused_as_a_misconfiguration(world, patients_csv):
    """Uploads must stream to temporary files (settings.FILE_UPLOAD_HANDLERS): a deployment that
    keeps them in memory is told so, and nothing is stored."""
    client = browser(world.alice)
    with (
        patients_csv.open("rb") as file,
        pytest.raises(ImproperlyConfigured, match="FILE_UPLOAD_HANDLERS"),
    ):
        client.post("/datasets/schema/", {"file": file})
    assert not Dataset.objects.exists()
