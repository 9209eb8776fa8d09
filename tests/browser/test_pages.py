"""What a person does in the browser: log in, upload a dataset, answer an invitation."""

import pytest
from playwright.sync_api import expect

from jobs.models import RoomMembership
from parties.models import Dataset
from parties.storage import stored_file

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_user_logs_in_and_sees_their_organisation_and_role(world, page, log_in):
    log_in(world.alice)
    expect(page.locator("header")).to_contain_text("Charité Berlin (Data owner)")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def test_a_wrong_password_is_refused_with_a_message(world, page):
    page.goto("/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("did not match")


def test_an_owner_uploads_a_dataset_after_confirming_its_schema(world, page, log_in, patients_csv):
    log_in(world.alice)
    page.goto("/datasets/new/")
    page.get_by_label("Name").fill("Inpatients")
    page.get_by_label("Slug").fill("inpatients")
    page.get_by_label("Jurisdiction").select_option("CH")
    page.get_by_label("File").set_input_files(patients_csv)
    schema = page.locator("#schema-table")
    expect(schema).to_contain_text("Confirm the schema")
    expect(page.get_by_label("Role of patient_id")).to_have_value("unit")
    expect(page.get_by_label("Role of age_band")).to_have_value("dimension")
    # The owner corrects a suggestion before uploading: cost's bounds become policy bounds.
    page.get_by_label("Lower bound of cost").fill("0")
    page.get_by_label("Upper bound of cost").fill("100000")
    page.get_by_role("button", name="Upload and encrypt").click()

    expect(page.get_by_role("status")).to_contain_text("stored encrypted in CH (200 rows)")
    dataset = Dataset.objects.get(organization=world.charite, slug="inpatients")
    version = dataset.versions.get()
    assert dataset.jurisdiction.code == "CH"
    cost = version.columns.get(name="cost")
    assert (cost.lower, cost.upper) == (0, 100000)
    stored = stored_file(version)
    assert stored.parts[-4] == "ch"
    assert b"circulatory" not in stored.read_bytes()


def test_a_refused_upload_says_why_and_stores_nothing(world, page, log_in, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("patient_id,age\n1,40\n2,forty\n")
    log_in(world.alice)
    page.goto("/datasets/new/")
    page.get_by_label("Name").fill("Bad")
    page.get_by_label("Slug").fill("bad")
    page.get_by_label("File").set_input_files(bad)
    expect(page.get_by_label("Type of age")).to_be_visible()
    page.get_by_label("Type of age").select_option("integer")
    page.get_by_label("Role of age").select_option("other")
    page.get_by_role("button", name="Upload and encrypt").click()
    expect(page.get_by_role("alert").first).to_contain_text(
        "'forty' on row 2 is not a valid integer"
    )
    assert not Dataset.objects.exists()


def test_the_page_checks_the_schema_before_sending_and_a_refusal_keeps_the_file(
    world, page, log_in, patients_csv
):
    log_in(world.alice)
    page.goto("/datasets/new/")
    expect(page.get_by_label("Jurisdiction")).to_have_value("EU")  # Charité's home
    page.get_by_label("Name").fill("Inpatients")
    page.get_by_label("Slug").fill("inpatients")
    page.get_by_label("File").set_input_files(patients_csv)
    expect(page.get_by_label("Role of patient_id")).to_have_value("unit")
    # Checked in the page: no unit, and a measure without an upper bound. Nothing is sent.
    page.get_by_label("Role of patient_id").select_option("other")
    page.get_by_label("Upper bound of cost").fill("")
    sent = []
    page.on("request", lambda request: sent.append(request) if request.method == "POST" else None)
    page.get_by_role("button", name="Upload and encrypt").click()
    problems = page.locator("#schema-problems")
    expect(problems).to_contain_text("Mark exactly one column as the privacy unit")
    expect(problems).to_contain_text("0 marked")
    expect(problems).to_contain_text("cost is a measure: give numeric lower and upper bounds")
    expect(page.get_by_label("Upper bound of cost")).to_have_attribute("aria-invalid", "true")
    assert sent == [] and not Dataset.objects.exists()
    assert page.get_by_label("File").evaluate("input => input.files.length") == 1

    # Refused by the server only (a value outside its domain): the file and settings stay.
    page.get_by_label("Role of patient_id").select_option("unit")
    expect(problems).not_to_contain_text("privacy unit")  # the list follows each correction
    page.get_by_label("Upper bound of cost").fill("75000")
    page.get_by_label("Upper bound of cost").dispatch_event("change")
    expect(problems).to_have_count(0)
    page.get_by_label("Domain of sex").fill("F")
    page.get_by_role("button", name="Upload and encrypt").click()
    expect(page.locator(".errors").first).to_contain_text("is outside the declared domain")
    expect(page.get_by_text("Kept from your last attempt: patients.csv")).to_be_visible()
    expect(page.get_by_label("Upper bound of cost")).to_have_value("75000")
    expect(page.get_by_label("Name")).to_have_value("Inpatients")
    assert not Dataset.objects.exists()
    page.get_by_label("Domain of sex").fill("F\nM")
    page.get_by_role("button", name="Upload and encrypt").click()
    expect(page.get_by_role("status")).to_contain_text("stored encrypted in EU (200 rows)")
    cost = Dataset.objects.get(slug="inpatients").versions.get().columns.get(name="cost")
    assert cost.upper == 75000


def test_an_invited_owner_accepts_the_invitation(world, page, log_in):
    room = world.room()
    log_in(world.carol)
    expect(page.get_by_text("Invitations waiting for you")).to_be_visible()
    page.get_by_role("link", name=room.name).first.click()
    page.get_by_role("button", name="Accept invitation").click()
    expect(page.get_by_role("status")).to_contain_text("University Hospital Zurich joined")
    membership = RoomMembership.objects.get(room=room, organization=world.zurich)
    assert membership.status == RoomMembership.Status.ACTIVE
    assert membership.responded_by == world.carol


def test_a_member_invites_an_organisation_without_leaving_the_room_page(world, page, log_in):
    room = world.room()
    log_in(world.alice)
    page.goto(f"/rooms/{room.slug}/")
    page.get_by_label("Invite an organisation").select_option(label="Pharma Research")
    page.get_by_role("button", name="Invite").click()
    expect(page.locator("#room-panel")).to_contain_text("Pharma Research is invited.")
    assert page.url.endswith(f"/rooms/{room.slug}/")
    assert RoomMembership.objects.get(room=room, organization=world.pharma).status == "invited"


def test_an_owner_suspends_its_participation_from_the_room_page_and_every_member_sees_it(
    world, page, log_in, tmp_path
):
    room = world.study(tmp_path)
    log_in(world.alice)
    page.goto(f"/rooms/{room.slug}/")
    page.get_by_role("button", name="Suspend Charité Berlin's participation").click()
    expect(page.get_by_role("status")).to_contain_text("participation is suspended")
    expect(page.get_by_text("Participation suspended")).to_be_visible()
    membership = room.memberships.get(organization=world.charite)
    assert membership.suspended_at is not None
    # The room's creator sees the suspension, and no button to lift it.
    log_in(world.bob)
    page.goto(f"/rooms/{room.slug}/")
    expect(page.get_by_text("Participation suspended")).to_be_visible()
    expect(page.get_by_role("button", name="Lift Charité Berlin's suspension")).to_have_count(0)
