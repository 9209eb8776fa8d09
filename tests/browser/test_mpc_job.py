"""The analyst runs an approved UNION ALL of three hospitals under MPC in the browser, watches
its steps at each owner's site and each party's site to the end, and reads the result."""

import pytest
from celery import _state, current_app
from playwright.sync_api import expect

from cleanroom.celery import app as project_app
from jobs.models import Job
from tests.jobs.conftest import site_worker  # noqa: F401 - the real worker, shared with tests/jobs
from tests.jobs.mpc_support import (  # noqa: F401 - share_inboxes is a fixture
    INPUT_SITES,
    PARTY_SITES,
    approved_union,
    share_inboxes,
    three_hospitals,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def workers(site_worker, share_inboxes):  # noqa: F811 - the fixtures imported above
    """A worker per input site and per MPC party site, reached from the live server's thread
    too (Celery's current app is per thread), and each party site's share inbox."""
    share_inboxes.start(*PARTY_SITES)
    waits = [site_worker(site) for site in INPUT_SITES + PARTY_SITES]
    _state.set_default_app(current_app._get_current_object())
    yield waits[0]
    _state.set_default_app(project_app)


def test_the_job_page_shows_every_party_site_of_an_mpc_run_and_its_result(
    world, tmp_path, workers, page, log_in
):
    room = three_hospitals(world, tmp_path)
    query = approved_union(world, room)
    log_in(world.bob)
    page.goto(f"/rooms/{room.slug}/queries/{query.pk}/")
    expect(page.get_by_text("uk-manchester-mpc").first).to_be_visible()  # the plan's sites
    page.get_by_role("button", name="Run").click()

    page.wait_for_url("**/jobs/*/")
    job = Job.objects.get(query=query)
    expect(page.locator("#job-state")).to_have_text("Succeeded", timeout=90_000)
    # A party may store its share just after the release: every step's task is done first.
    outcomes = [workers(60)[2] for _ in range(6)]
    assert outcomes.count("released") == 1
    page.reload()
    steps = page.locator("#job-steps")
    for site in INPUT_SITES + PARTY_SITES:
        expect(steps).to_contain_text(site)
    expect(steps).to_contain_text("input barts.patients")
    expect(steps.get_by_text("Succeeded")).to_have_count(job.steps.count())
    expect(page.locator("#job-progress")).not_to_contain_text("SIMULATED TEE")

    page.get_by_role("link", name="See the result").click()
    page.wait_for_url(f"**/jobs/{job.pk}/result/")
    expect(page.get_by_text("discrete Laplace").first).to_be_visible()
