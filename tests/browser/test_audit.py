"""The audit pages in the browser: a party reads its trail with verified marks and filters it; a
regulator downloads a room's bundle and verifies it offline with the verify.pyz inside."""

import io
import re

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from tests import factories
from tests.audit.bundling import run_verify, trust_file
from tests.factories import JOIN_SQL, propose

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def decided(world, settings, tmp_path):
    """The study room with a query both owners approved; checkpoints signed after each commit,
    as the embedded default does."""
    settings.AUDIT_CHECKPOINT_SIGNING = "inline"
    room = world.study(tmp_path)
    query = propose(room, world.bob, world.pharma, sql=JOIN_SQL, title="Costs by diagnosis")
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    return query


def test_an_owner_reads_its_trail_with_verified_marks_and_filters_it(world, decided, page, log_in):
    log_in(world.alice)
    page.goto("/audit/")
    events = page.locator("tbody tr[id^='event-']")
    expect(events.first).to_be_visible()
    shown = events.count()
    assert shown > 10
    # Every event on the page was proven against a signed checkpoint, here and now.
    expect(page.get_by_text("✓ verified")).to_have_count(shown)
    expect(page.locator(".badge.bad")).to_have_count(0)
    expect(page.locator("#trail-summary")).to_contain_text(f"{shown} verified")
    expect(page.get_by_role("heading", name="Checkpoints")).to_be_visible()
    expect(page.locator("table").first).to_contain_text("cleanroom.local/room/")

    page.get_by_label("Event type").select_option("query.approved")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"type=query\.approved"))
    expect(events).to_have_count(2)
    expect(page.locator("#trail-summary")).to_contain_text("2 events match")
    expect(page.get_by_text("✓ verified")).to_have_count(2)

    page.get_by_label("Event type").select_option("")
    page.get_by_label("Query id").fill(str(decided.pk))
    page.get_by_role("button", name="Filter").click()
    expect(events).to_have_count(3)  # submitted, then approved by each owner
    for kind in ("query.submitted", "query.approved"):
        expect(page.get_by_role("region", name="Events", exact=True)).to_contain_text(kind)

    page.get_by_role("link", name="Clear filters").click()
    expect(events).to_have_count(shown)


def test_a_regulator_downloads_a_bundle_and_verifies_it_offline(
    world, decided, page, log_in, tmp_path
):
    log_in(world.rita)
    page.goto("/audit/")  # regulators read bundles, not trails
    expect(page).to_have_url(re.compile(r"/audit/bundles/$"))
    row = page.get_by_role("row").filter(has_text="Outcomes study")
    expect(row).to_contain_text("cleanroom.local/room/")
    with page.expect_download() as download:
        row.get_by_role("link", name="Download").click()
    bundle = tmp_path / download.value.suggested_filename
    download.value.save_as(bundle)
    assert bundle.name == "study-audit-bundle.zip"

    keys = io.StringIO()
    call_command("export_owner_credentials", stdout=keys)
    verdict = run_verify(bundle, trust_file(tmp_path, keys.getvalue()))
    assert verdict.ok, verdict.stderr
    assert verdict.stdout.startswith("OK: cleanroom.local/room/")
    assert "credential your trust file pins for that organisation" in verdict.stdout
