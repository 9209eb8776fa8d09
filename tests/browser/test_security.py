"""In a hospital's offline network: the API reference (Swagger UI and ReDoc) renders from the
project's own files with every request to another host refused, and the pages work under their
Content-Security-Policy with nothing refused (htmx included)."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


# Each page of the API reference, and what shows it has rendered the schema: Swagger UI's
# operation blocks; ReDoc's operation sections and its search box (run by a worker).
API_REFERENCES = {
    "/api/docs/": [".opblock"],
    "/api/redoc/": ["[data-section-id^='operation/']", "input[placeholder='Search...']"],
}
# ReDoc's bundle hard-codes its maker's logo, from its CDN, under the side menu (no option turns
# it off): the policy refuses that image before any request is made, and ReDoc then hides it.
REFUSED_BY_DESIGN = {"/api/redoc/": "https://cdn.redoc.ly/redoc/logo-mini.svg"}


@pytest.mark.parametrize("path", API_REFERENCES)
def test_the_api_reference_renders_with_the_network_blocked(world, page, log_in, path):
    left, asked = [], []

    def only_this_server(route) -> None:
        asked.append(route.request.url)
        if urlparse(route.request.url).hostname in ("localhost", "127.0.0.1"):
            route.continue_()
        else:
            left.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    violations = []
    page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))
    log_in(world.alice)
    page.goto(path)
    page.get_by_text("Clean room API").first.wait_for()
    for rendered in API_REFERENCES[path]:
        page.locator(rendered).first.wait_for()
    assert any(url.endswith("/api/schema/") for url in asked)
    assert left == []
    refused = REFUSED_BY_DESIGN.get(path)
    assert [v for v in violations if not (refused and f"image '{refused}'" in v)] == []


def test_pages_and_htmx_work_under_the_policy(world, page, log_in, tmp_path):
    room = world.study(tmp_path)
    violations = []
    page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))
    log_in(world.bob)
    for path in (
        "/",
        "/datasets/",
        f"/rooms/{room.slug}/",
        f"/rooms/{room.slug}/budget/",
        "/account/security/",
    ):
        page.goto(path)
    page.goto(f"/rooms/{room.slug}/queries/new/")
    page.get_by_label("Query", exact=True).fill(
        "SELECT b.diagnosis, COUNT(*) AS n FROM charite.patients AS b GROUP BY b.diagnosis"
    )
    # The plan panel is filled by htmx as the query is typed.
    page.get_by_text("The query is in the joint query language").first.wait_for()
    assert violations == []


def test_a_token_made_on_the_security_page_is_shown_once_and_revoked_there(world, page, log_in):
    log_in(world.alice)
    page.get_by_role("link", name="Security").click()
    page.get_by_label("Name").fill("R script")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token-secret").inner_text()
    assert secret.startswith("crt_")
    page.goto("/account/security/")
    assert secret not in page.content()
    page.get_by_role("button", name="Revoke R script").click()
    page.get_by_text("is revoked").wait_for()
    row = page.get_by_role("row").filter(has_text="R script")
    assert "revoked" in row.inner_text()
