"""A new user's path through a synthetic extract: the analyst composes a DP extract of the
joined hospital data, both owners approve it in their inbox, it runs in the (simulated) TEE,
and the receiver reads its reports and downloads it."""

import io
import re
import zipfile

import polars as pl
import pytest
from celery import _state, current_app
from playwright.sync_api import expect

from cleanroom.celery import app as project_app
from jobs.models import BudgetEntry, Job, Query
from tests.browser.test_passkeys import register
from tests.jobs.conftest import site_worker  # noqa: F401 - the real worker, shared with tests/jobs
from tests.jobs.test_synthetic_plan import JOINED, allow_synthetic

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker(site_worker):  # noqa: F811 - the fixture imported above
    """The TEE site's worker, reachable from the live server's thread (see test_results)."""
    wait = site_worker("eu-frankfurt-tee")
    _state.set_default_app(current_app._get_current_object())
    yield wait
    _state.set_default_app(project_app)


def test_a_dp_extract_is_composed_approved_run_and_downloaded(
    world, tmp_path, worker, page, log_in, authenticator
):
    room = world.study(tmp_path)
    allow_synthetic(world, room)

    log_in(world.bob)
    page.goto(f"/rooms/{room.slug}/queries/new/")
    page.get_by_label("Title").fill("Synthetic patients")
    page.get_by_label("Purpose").fill("Develop the analysis code")
    page.get_by_label("Pharma Research").check()
    page.get_by_label("Output", exact=True).select_option("synthetic")
    page.get_by_label("Synthetic rows").fill("200")
    page.get_by_label("ε (epsilon)").fill("1")
    page.get_by_label("δ (delta)").fill("0.000001")
    page.get_by_label("Query").fill(JOINED)
    plan = page.locator("#plan")
    expect(plan).to_contain_text("All checks pass")
    expect(plan.locator("#synthetic-method")).to_contain_text("differentially private")
    expect(plan.get_by_role("table", name="Columns of the extract")).to_contain_text("16 bins")
    expect(plan.get_by_role("table", name="Which owners allow the method")).to_contain_text(
        "University Hospital Zurich"
    )
    page.get_by_role("button", name="Submit for approval").click()
    expect(page.locator("#status")).to_have_text("Waiting for approvals")
    query = Query.objects.get()
    assert query.output_kind == "synthetic" and query.synthetic_rows == 200

    for owner, org in (
        (world.alice, "Charité Berlin"),
        (world.carol, "University Hospital Zurich"),
    ):
        page.get_by_role("button", name="Log out").click()
        log_in(owner)
        register(page, f"{owner.username}'s laptop")
        page.goto("/approvals/")
        item = page.get_by_role("article").filter(has_text="Synthetic patients")
        expect(item).to_contain_text("Synthetic extract of 200 rows by dp-marginals")
        item.get_by_role("button", name=f"Approve for {org}").click()
        expect(page.get_by_role("status")).to_contain_text(f"{org} approved version 1")

    page.get_by_role("button", name="Log out").click()
    log_in(world.bob)
    page.goto(f"/rooms/{room.slug}/queries/{query.pk}/")
    page.get_by_role("button", name="Run").click()
    page.wait_for_url("**/jobs/*/")
    expect(page.locator("#job-state")).to_have_text("Succeeded", timeout=300_000)
    assert worker() == ("jobs.run_job", "SUCCESS", "released")
    job = Job.objects.get(query=query)

    page.locator("#job-progress").get_by_role("link", name="See the result").click()
    page.wait_for_url(f"**/jobs/{job.pk}/result/")
    guarantee = page.locator("#extract-guarantee")
    expect(guarantee).to_contain_text("differentially private")
    expect(guarantee).to_contain_text("SIMULATED TEE - NOT HARDWARE BACKED")
    expect(page.locator("#quality-score")).to_have_text(re.compile(r"^[01]\.\d{3}$"))
    scores = page.get_by_role("table", name="Quality score per column")
    expect(scores.locator("tbody tr")).to_have_count(3)
    # Real against synthetic, with the real side only as the run's noisy counts.
    figure = page.get_by_role(
        "figure", name="age_band: share of each value, noisy real against synthetic"
    )
    chart = figure.locator("[data-chart] svg")
    expect(chart.locator('g[aria-label="bar"] rect')).to_have_count(2 * 4)
    shares = chart.locator('g[aria-label="y-axis tick label"] text').all_text_contents()
    assert len(shares) >= 3 and all(re.fullmatch(r"\d+", share) for share in shares), shares
    assert len(chart.locator('g[aria-label="fx-axis tick label"] text').all_text_contents()) == 4
    expect(figure.locator(".chart-data tbody tr")).to_have_count(4)
    page.screenshot(path=tmp_path / "extract-marginals.png", full_page=True)

    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV with reports (zip)").click()
    archive = zipfile.ZipFile(download.value.path())
    assert {"README.txt", "extract.csv", "quality.json", "privacy.json"} <= set(archive.namelist())
    assert query.digest in archive.read("README.txt").decode()
    rows = pl.read_csv(io.BytesIO(archive.read("extract.csv")), comment_prefix="#")
    assert rows.height == 200 and rows.columns == ["age_band", "diagnosis", "stay"]

    page.goto(f"/rooms/{room.slug}/budget/")
    charge = query.canonical["synthetic"]["charge"]["epsilon"].rstrip("0").rstrip(".")
    for name in ("charite.patients", "usz.patients"):
        card = page.locator("section.card").filter(has_text=name)
        expect(card).to_contain_text(re.compile(rf"Spent ε {re.escape(charge)}0*,"))
    assert BudgetEntry.objects.filter(query=query, kind="spend").count() == 2
