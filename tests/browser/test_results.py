"""The analyst runs an approved query in the browser, watches its job to the end, reads the
result with its intervals, downloads it, and sees the budget it spent."""

import csv
import io
import re

import pytest
from celery import _state, current_app
from playwright.sync_api import expect

from cleanroom.celery import app as project_app
from jobs.execution.lifecycle import run_query
from jobs.models import BudgetEntry, Job, Result
from jobs.results.storage import read_result
from tests import factories
from tests.factories import JOIN_SQL, propose
from tests.jobs.conftest import site_worker  # noqa: F401 - the real worker, shared with tests/jobs

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SITE = "eu-frankfurt-tee"


@pytest.fixture
def approved(world, tmp_path):
    room = world.study(tmp_path)
    query = propose(room, world.bob, world.pharma, sql=JOIN_SQL, title="Costs by diagnosis")
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    query.refresh_from_db()
    return query


@pytest.fixture
def worker(site_worker):  # noqa: F811 - the fixture imported above
    """The site's worker, reached from the live server's thread too: Celery's current app is
    per thread, so the worker's app becomes every thread's default while the test runs."""
    wait = site_worker(SITE)
    _state.set_default_app(current_app._get_current_object())
    yield wait
    _state.set_default_app(project_app)


def chart_ticks(chart, axis: str) -> list[str]:
    """The tick labels Plot drew on one axis of a chart (its SVG text, not a picture of it)."""
    return chart.locator(f'g[aria-label="{axis}-axis tick label"] text').all_text_contents()


NUMBER = re.compile("[\u2212-]?\\d[\\d,.]*%?")  # Plot writes negatives with a minus sign


def tick_values(ticks: list[str]) -> list[float]:
    return [float(tick.replace("\u2212", "-").replace(",", "").rstrip("%")) for tick in ticks]


def test_the_analyst_runs_a_query_and_reads_its_result_with_intervals(
    world, approved, worker, page, log_in, tmp_path
):
    refused_by_csp = []
    page.on(
        "console",
        lambda message: (
            refused_by_csp.append(message.text)
            if "Content Security Policy" in message.text
            else None
        ),
    )
    room = approved.room
    log_in(world.bob)
    page.goto(f"/rooms/{room.slug}/queries/{approved.pk}/")
    page.get_by_role("button", name="Run").click()

    page.wait_for_url("**/jobs/*/")
    job = Job.objects.get(query=approved)
    assert page.url.endswith(f"/rooms/{room.slug}/jobs/{job.pk}/")
    # The page polls (htmx) until the worker has released the result.
    expect(page.locator("#job-state")).to_have_text("Succeeded", timeout=60_000)
    assert worker() == ("jobs.run_job", "SUCCESS", "released")
    progress = page.locator("#job-progress")
    expect(progress).to_contain_text("SIMULATED TEE - NOT HARDWARE BACKED")
    expect(progress).to_contain_text("Released to the receivers")
    page.reload()
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)  # a finished job

    table = read_result(Result.objects.get(job=job), world.pharma, world.bob)
    released = [row for row in table["rows"] if not row["suppressed"]]
    assert released, table
    progress.get_by_role("link", name="See the result").click()
    page.wait_for_url(f"**/jobs/{job.pk}/result/")
    expect(page.get_by_role("heading", name="Costs by diagnosis")).to_be_visible()
    expect(page.locator("main")).to_contain_text("SIMULATED TEE - NOT HARDWARE BACKED")

    rows = page.locator("#result-table tbody tr")
    expect(rows).to_have_count(len(table["rows"]))
    for row in released:
        shown = rows.filter(has_text=row["diagnosis"])
        low, high = row["n"]["ci95_low"], row["n"]["ci95_high"]
        expect(shown).to_contain_text(f"[{low:.2f}, {high:.2f}]")
        expect(shown).to_contain_text("Laplace")
    # The chart (Observable Plot): one dot and one error bar per released group, and axes whose
    # ticks carry values, read from the rendered SVG.
    figure = page.get_by_role("figure", name="n per group, with its 95 % interval")
    chart = figure.locator("[data-chart] svg")
    expect(chart).to_be_visible()
    expect(chart.locator('g[aria-label="dot"] circle')).to_have_count(len(released))
    expect(chart.locator('g[aria-label="rule"] line')).to_have_count(len(released) + 1)
    y_ticks = chart_ticks(chart, "y")
    assert len(y_ticks) >= 3 and all(NUMBER.fullmatch(tick) for tick in y_ticks), y_ticks
    assert sorted(chart_ticks(chart, "x")) == sorted(row["diagnosis"] for row in released)
    # And the values are painted where a reader looks: every tick label is on screen, inside the
    # chart's own box (a label drawn off the canvas, or hidden, would pass the checks above).
    box = chart.bounding_box()
    for label in chart.locator('g[aria-label$="-axis tick label"] text').all():
        expect(label).to_be_visible()
        tick = label.bounding_box()
        assert box["x"] <= tick["x"] and tick["x"] + tick["width"] <= box["x"] + box["width"]
        assert box["y"] <= tick["y"] and tick["y"] + tick["height"] <= box["y"] + box["height"]
    # Its numbers as a table beside it, for screen readers.
    data = figure.locator(".chart-data tbody tr")
    expect(data).to_have_count(len(released))
    first = released[0]
    expect(data.filter(has_text=first["diagnosis"])).to_contain_text(
        f"[{first['n']['ci95_low']:.2f}, {first['n']['ci95_high']:.2f}]"
    )
    page.screenshot(path=tmp_path / "result-chart.png", full_page=True)

    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    assert download.value.suggested_filename == f"result-job-{job.pk}.csv"
    lines = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
    assert len(lines) == len(table["rows"])
    by_diagnosis = {line["diagnosis"]: line for line in lines}
    for row in released:
        line = by_diagnosis[row["diagnosis"]]
        assert float(line["n"]) == row["n"]["value"]
        assert float(line["n_ci95_low"]) == row["n"]["ci95_low"]
        assert float(line["n_ci95_high"]) == row["n"]["ci95_high"]
        assert line["n_mechanism"] == row["n"]["mechanism"] and line["suppressed"] == "False"

    page.goto(f"/rooms/{room.slug}/budget/")
    for name in ("charite.patients", "usz.patients"):
        card = page.locator("section.card").filter(has_text=name)
        expect(card).to_contain_text(
            re.compile(r"Spent ε 0\.50*, reserved 0, remaining 2\.50* of 3\.")
        )
        expect(card.get_by_label("17 % spent, 0 % reserved")).to_be_visible()
        chart = card.locator("[data-chart] svg")
        expect(chart).to_be_visible()
        y_ticks = chart_ticks(chart, "y")
        assert all(NUMBER.fullmatch(tick) for tick in y_ticks), y_ticks
        assert 0 in tick_values(y_ticks) and 3 in tick_values(y_ticks), y_ticks
        assert chart_ticks(chart, "x"), "the time axis has no tick values"
        expect(chart.locator("text").filter(has_text="total ε 3")).to_have_count(1)
        expect(card.locator(".chart-data tbody tr")).to_have_count(3)  # two entries and the total
        ledger = card.locator(".table-wrap").last.locator("tbody tr")
        expect(ledger).to_have_count(2)  # the reservation, then the spend
    page.screenshot(path=tmp_path / "budget-chart.png", full_page=True)
    print(f"Screenshots for the lead: {tmp_path}/result-chart.png, {tmp_path}/budget-chart.png")
    assert refused_by_csp == []
    kinds = sorted(BudgetEntry.objects.filter(query=approved).values_list("kind", flat=True))
    assert kinds == ["reserve", "reserve", "spend", "spend"]


def test_a_member_who_does_not_receive_the_result_sees_the_job_but_not_the_table(
    world, approved, worker, page, log_in
):
    job = run_query(query=approved, by=world.bob)
    assert worker() == ("jobs.run_job", "SUCCESS", "released")

    log_in(world.alice)
    page.goto(f"/rooms/{approved.room.slug}/jobs/{job.pk}/")
    expect(page.locator("#job-state")).to_have_text("Succeeded")
    expect(page.locator("#job-progress")).to_contain_text("The result went to its receivers only.")
    expect(page.get_by_role("link", name="See the result")).to_have_count(0)
    response = page.goto(f"/rooms/{approved.room.slug}/jobs/{job.pk}/result/")
    assert response.status == 403
    expect(page.locator("tbody tr")).to_have_count(0)
