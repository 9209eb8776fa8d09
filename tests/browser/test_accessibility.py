"""Accessibility: axe-core finds no serious or critical violation on any page (each page template
once, as an analyst, an owner, an auditor or a regulator sees it), and an analyst composes and
submits a query, and an owner approves it, with the keyboard alone."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import expect

from jobs import tasks
from jobs.execution.lifecycle import run_query
from jobs.models import Job, Query
from tests import factories
from tests.browser.conftest import add_virtual_authenticator
from tests.browser.test_passkeys import register
from tests.browser.test_security import API_REFERENCES
from tests.factories import JOIN_SQL, propose
from tests.jobs.test_synthetic_plan import JOINED, allow_synthetic
from tests.test_authorization_matrix import TEE_SITE, scene, url_of  # noqa: F401 - its scene

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Vendored for the tests alone (cleanroom/static/vendor/README.md says from where): no page
# serves it. The browser is handed it at an address of the test server's origin, so each page
# keeps the CSP users get (script-src 'self') while axe runs in it.
AXE = Path(__file__).parent / "vendor" / "axe-core-4.14.1" / "axe.min.js"
AXE_URL = "/__tests__/axe.min.js"
BLOCKING = ("serious", "critical")

# Each page template once, as (persona, URL name in the authorization matrix).
PAGES = [
    ("anon", "login"),
    ("bob", "dashboard"),
    ("bob", "dataset-list"),
    ("bob", "dataset-detail"),
    ("bob", "room-list"),
    ("bob", "room-create"),
    ("bob", "room-detail"),
    ("bob", "room-budget"),
    ("bob", "query-create"),
    ("bob", "job-detail"),
    ("bob", "result-detail"),
    ("bob", "account-security"),
    ("alice", "dataset-create"),
    ("alice", "version-create"),
    ("alice", "policy-edit"),
    ("alice", "inbox"),
    ("alice", "query-detail"),
    ("dave", "audit-trail"),
    ("rita", "audit-bundles"),
    ("rita", "api-docs"),
    ("rita", "api-redoc"),
]


def log_in(page, user) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill("correct-horse-battery")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/")


def new_page(browser, live_server):
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(10_000)
    context.route(f"**{AXE_URL}", lambda route: route.fulfill(path=AXE))
    return context.new_page()


def axe_violations(page) -> list[str]:
    """axe-core's serious and critical findings on the page as it is now, one line each."""
    page.add_script_tag(url=AXE_URL)
    found = page.evaluate("async () => (await axe.run(document)).violations")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + "; ".join(", ".join(node["target"]) for node in v["nodes"][:5])
        for v in found
        if v["impact"] in BLOCKING
    ]


@pytest.fixture
def extract_job(world, scene) -> Job:  # noqa: F811 - the matrix's scene
    """A released DP synthetic extract in the scene's room, run in this process (as the scene
    runs its aggregate job), so its page exists."""
    allow_synthetic(world, scene.room)
    query = propose(
        scene.room,
        world.bob,
        world.pharma,
        sql=JOINED,
        title="Synthetic patients",
        epsilon=Decimal("1"),
        delta=Decimal("1e-6"),
        output_kind=Query.OutputKind.SYNTHETIC,
        synthetic_method="dp-marginals",
        synthetic_rows=100,
    )
    for org, owner in ((world.charite, world.alice), (world.zurich, world.carol)):
        factories.decide(query=query, organization=org, by=owner, approve=True)
    job = run_query(query=query, by=world.bob)
    assert tasks.run_job(job.pk, TEE_SITE) == "released"
    return job


def test_axe_finds_no_serious_violation_on_any_page(
    scene,  # noqa: F811 - the matrix's scene
    extract_job,
    browser,
    live_server,
):
    room = scene.room.slug
    # Beyond the matrix's URLs: the pages' other states (an owner deciding, a released extract).
    extra = {
        "alice": [f"/rooms/{room}/queries/{scene.pending.pk}/"],
        "bob": [f"/rooms/{room}/jobs/{extract_job.pk}/result/"],
    }
    found = {}
    for persona in dict.fromkeys(persona for persona, _ in PAGES):
        page = new_page(browser, live_server)
        if scene.users[persona] is not None:
            log_in(page, scene.users[persona])
        paths = [url_of(name, scene) for who, name in PAGES if who == persona]
        for path in paths + extra.get(persona, []):
            assert page.goto(path).status == 200, (persona, path)
            for rendered in API_REFERENCES.get(path, ["h1"]):
                page.locator(rendered).first.wait_for()
            violations = axe_violations(page)
            if violations:
                found[f"{persona} {path}"] = violations
        page.context.close()
    assert found == {}


def tab_to(page, target, limit: int = 60) -> None:
    """Press Tab until `target` has the focus: it is reachable by keyboard, in order."""
    for _ in range(limit):
        if target.evaluate("element => element === document.activeElement"):
            return
        page.keyboard.press("Tab")
    pytest.fail(f"{target} is not reached with Tab")


def test_an_analyst_composes_and_an_owner_approves_with_the_keyboard_alone(
    world, tmp_path, browser, live_server, settings
):
    settings.WEBAUTHN_RP_ID = "localhost"
    settings.WEBAUTHN_ORIGINS = [live_server.url.replace("127.0.0.1", "localhost")]
    room = world.study(tmp_path)
    page = new_page(browser, live_server)
    log_in(page, world.bob)
    page.goto(f"/rooms/{room.slug}/queries/new/")
    # The skip link first, then the form in page order.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    tab_to(page, page.get_by_label("Title"))
    page.keyboard.type("Costs by diagnosis")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Purpose")).to_be_focused()
    page.keyboard.type("Health economics")
    page.keyboard.press("Tab")
    editor = page.get_by_role("textbox", name="Query")
    expect(editor).to_be_focused()
    for number, line in enumerate(JOIN_SQL.split("\n")):
        if number:
            page.keyboard.press("Escape")  # close any completion list: Enter starts a new line
            page.keyboard.press("Enter")
        page.keyboard.type(line)
    page.keyboard.press("Escape")
    expect(page.locator("#plan")).to_contain_text("The query is in the joint query language.")
    # The editor keeps no one in it: Tab moves on to the next field.
    page.keyboard.press("Tab")
    expect(page.get_by_label("Output", exact=True)).to_be_focused()
    tab_to(page, page.get_by_label("Pharma Research"))
    page.keyboard.press("Space")
    expect(page.get_by_label("Pharma Research")).to_be_checked()
    axe_on_composer = axe_violations(page)
    tab_to(page, page.get_by_role("button", name="Submit for approval"))
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_have_text("Waiting for approvals")
    query = Query.objects.get()
    assert " ".join(query.sql.split()) == " ".join(JOIN_SQL.split())
    assert axe_on_composer == []
    page.context.close()

    # The owner decides in the inbox, from the keyboard; the passkey prompt is the device's own.
    page = new_page(browser, live_server)
    add_virtual_authenticator(page)
    log_in(page, world.alice)
    register(page, "Laptop")
    page.goto("/approvals/")
    item = page.get_by_role("article").filter(has_text="Costs by diagnosis")
    tab_to(page, item.get_by_label("Comment for Charité Berlin"))
    page.keyboard.type("Aggregates only, fine.")
    tab_to(page, item.get_by_role("button", name="Approve for Charité Berlin"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("Charité Berlin approved version 1")
    approval = query.approvals.get(organization=world.charite)
    assert approval.decision == "approve" and approval.comment == "Aggregates only, fine."
    page.context.close()
