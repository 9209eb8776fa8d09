"""The composer's SQL editor (CodeMirror): it completes the room's names and the columns each
policy allows, marks the parser's refusal at its line and column, shows the extract's fields only
for an extract, runs under the strict CSP, and the form still works without JavaScript."""

import pytest
from playwright.sync_api import expect

from jobs.models import Query
from jobs.rooms.services import contribute_dataset
from parties import services
from tests.browser.test_accessibility import AXE, AXE_URL, axe_violations
from tests.factories import JOIN_SQL

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The join query, with the cost summed on Charité's side (Zurich's policy below refuses it).
COSTS_SQL = JOIN_SQL.replace("SUM(v.cost)", "SUM(d.cost)")


@pytest.fixture
def study(world, tmp_path):
    """The study room, where Zurich's policy no longer allows cost as a measure."""
    room = world.study(tmp_path)
    dataset = world.zurich.datasets.get(slug="patients")
    services.update_policy(dataset=dataset, by=world.carol, allowed_measures=["length_of_stay"])
    contribute_dataset(room=room, dataset=dataset, by=world.carol)
    return room


@pytest.fixture
def csp_reports(page):
    """Every message in which the browser says the Content-Security-Policy refused something."""
    reports = []
    page.on("console", lambda m: "Content Security Policy" in m.text and reports.append(m.text))
    return reports


def expect_completions(page, offered: dict[str, str]) -> None:
    """The open completion list shows exactly these options (label: what it says of each), in
    CodeMirror's order (alphabetical while nothing of the name is typed)."""
    listbox = page.get_by_role("listbox")
    expect(listbox.locator(".cm-completionLabel")).to_have_text(list(offered))
    expect(listbox.get_by_role("option")).to_have_text(
        [label + detail for label, detail in offered.items()]
    )


def expect_offered(page, label: str, detail: str) -> None:
    option = (
        page.get_by_role("listbox")
        .get_by_role("option")
        .filter(has=page.locator(".cm-completionLabel", has_text=label))
    )
    expect(option.locator(".cm-completionDetail")).to_have_text(detail)


def test_the_editor_completes_allowed_columns_and_marks_the_refusal_inline(
    world, study, page, log_in, csp_reports
):
    page.context.route(f"**{AXE_URL}", lambda route: route.fulfill(path=AXE))
    log_in(world.bob)
    page.goto(f"/rooms/{study.slug}/queries/new/")
    editor = page.get_by_role("textbox", name="Query")
    expect(page.locator("#id_sql")).to_be_hidden()  # the editor stands in for the textarea
    editor.click()

    page.keyboard.type("SELECT d.diagnosis, COUNT(*) AS n, SUM(v.cost) AS cost FROM ch")
    expect_offered(page, "charite.patients", "dataset of Charité Berlin")
    page.keyboard.press("Escape")
    page.keyboard.type("arite.")
    expect_completions(page, {"patients": "dataset"})
    # Taken with the pointer: CodeMirror ignores Enter for 75 ms after a list opens, so a key
    # pressed as it appears is not taken for a choice (which a test cannot wait for honestly).
    page.get_by_role("listbox").get_by_role("option").click()
    page.keyboard.type(" AS d JOIN usz.patients AS v ON d.person_hash = v.")
    # Through the alias, Zurich's columns with the uses its policy allows: not cost (no longer
    # a measure there), never the privacy unit.
    expect_completions(
        page,
        {
            "age_band": "dimension, filter",
            "diagnosis": "dimension, filter",
            "length_of_stay": "measure",
            "person_hash": "join key",
            "sex": "dimension, filter",
        },
    )
    assert axe_violations(page) == []  # the editor with its completion list open
    page.keyboard.type("person_hash")
    page.keyboard.press("Escape")
    page.keyboard.press("Enter")
    page.keyboard.type("GROUP BY d.")
    expect_offered(page, "cost", "measure")
    expect(page.get_by_role("option").filter(has_text="patient_id")).to_have_count(0)
    page.keyboard.type("diagnosis")
    page.keyboard.press("Escape")

    # The parser refuses Zurich's cost as a measure: the plan says so, and the editor marks the
    # column at that line and column.
    plan = page.locator("#plan")
    expect(plan).to_contain_text("Line 1, column 42: usz.patients's policy does not allow cost")
    expect(page.locator(".cm-lintRange-error")).to_have_text("cost")
    expect(page.locator(".cm-gutter-lint .cm-lint-marker-error")).to_have_count(1)
    page.keyboard.press("Control+Shift+KeyM")  # the diagnostics panel, for keyboard users
    expect(page.locator(".cm-panel.cm-panel-lint")).to_contain_text(
        "usz.patients's policy does not allow cost as a measure"
    )
    assert axe_violations(page) == []  # the editor with its mark, gutter and panel
    page.keyboard.press("Escape")

    # Typing over the whole text (select all, then type it anew) marks a refusal on line 3, and
    # the browser's own edit never tries an inline style the CSP would refuse.
    editor.fill(COSTS_SQL.replace("GROUP BY d.diagnosis", "GROUP BY v.cost"))
    expect(plan).to_contain_text("Line 3, column 12: v.cost is in GROUP BY but not selected")
    # Marked where the parser points: the column's name on the third line.
    expect(page.locator(".cm-line").nth(2).locator(".cm-lintRange-error")).to_have_text("cost")
    editor.fill(COSTS_SQL)
    expect(plan).to_contain_text("The query is in the joint query language.")
    expect(page.locator(".cm-lintRange-error")).to_have_count(0)

    # The extract's fields appear only when the output is a synthetic extract.
    expect(page.get_by_label("Synthesis method")).to_be_hidden()
    expect(page.get_by_label("Synthetic rows")).to_be_hidden()
    page.get_by_label("Output", exact=True).select_option("synthetic")
    expect(page.get_by_label("Synthesis method")).to_be_visible()
    expect(page.get_by_label("Synthetic rows")).to_be_visible()
    page.get_by_label("Output", exact=True).select_option("aggregate")
    expect(page.get_by_label("Synthetic rows")).to_be_hidden()

    page.get_by_label("Title").fill("Costs by diagnosis")
    page.get_by_label("Purpose").fill("Health economics")
    page.get_by_label("Pharma Research").check()
    page.get_by_role("button", name="Submit for approval").click()
    expect(page.locator("#status")).to_have_text("Waiting for approvals")
    # What the editor held is what was sent (a form sends a textarea's line ends as CRLF).
    assert Query.objects.get().sql.replace("\r\n", "\n") == COSTS_SQL
    assert csp_reports == []


def test_the_style_nonce_admits_the_editors_styles_and_nothing_else(
    world, study, page, log_in, csp_reports
):
    log_in(world.bob)
    page.goto(f"/rooms/{study.slug}/queries/new/")
    editor = page.locator(".cm-editor")
    expect(editor).to_be_visible()
    # CodeMirror's base theme (a style element it adds) applies: the editor is a flex box.
    assert editor.evaluate("e => getComputedStyle(e).display") == "flex"
    assert csp_reports == []
    # A style element without the nonce, as an injected one would be, is refused.
    colour = page.evaluate(
        """() => {
            const style = document.createElement("style");
            style.textContent = "body { background: rgb(255, 0, 0) }";
            document.head.append(style);
            return getComputedStyle(document.body).backgroundColor;
        }"""
    )
    assert colour != "rgb(255, 0, 0)"
    assert len(csp_reports) == 1 and "style" in csp_reports[0]


def test_typing_over_a_selection_the_editor_has_not_yet_seen_sets_no_style(
    world, study, page, log_in, csp_reports
):
    """The race a loaded machine makes: the page's selection changes and text arrives before
    CodeMirror has read the change. Left to the browser, its edit would carry the replaced
    keyword's colour over as a style attribute, which the policy refuses."""
    log_in(world.bob)
    page.goto(f"/rooms/{study.slug}/queries/new/")
    page.get_by_role("textbox", name="Query").click()
    page.keyboard.type("SELECT d.diagnosis FROM charite.patients AS d")
    expect(page.locator("#id_sql")).to_have_value("SELECT d.diagnosis FROM charite.patients AS d")
    page.evaluate(
        """() => {
            // CodeMirror does not hear of this one selection change, as if the text came first.
            document.addEventListener(
                "selectionchange", (event) => event.stopImmediatePropagation(),
                { capture: true, once: true },
            );
            const range = document.createRange();
            range.selectNodeContents(document.querySelector(".cm-content"));
            getSelection().removeAllRanges();
            getSelection().addRange(range);
        }"""
    )
    page.keyboard.insert_text("SELECT 1")
    expect(page.locator("#id_sql")).to_have_value("SELECT 1")
    expect(page.locator(".cm-content [style]")).to_have_count(0)
    assert csp_reports == []


def test_without_javascript_the_textarea_composes_and_submits(world, study, browser, live_server):
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    page = context.new_page()
    page.goto("/login/")
    page.get_by_label("Username").fill(world.bob.username)
    page.get_by_label("Password").fill("correct-horse-battery")
    page.get_by_role("button", name="Log in").click()
    page.goto(f"/rooms/{study.slug}/queries/new/")
    page.get_by_label("Title").fill("Costs by diagnosis")
    page.get_by_label("Purpose").fill("Health economics")
    page.get_by_label("Pharma Research").check()
    # The extract's fields are hidden by the stylesheet alone while the output is aggregates.
    expect(page.get_by_label("Synthetic rows")).to_be_hidden()
    page.get_by_label("Query", exact=True).fill(COSTS_SQL)
    page.get_by_role("button", name="Submit for approval").click()
    expect(page.locator("#status")).to_have_text("Waiting for approvals")
    assert Query.objects.get().sql.replace("\r\n", "\n") == COSTS_SQL
    context.close()
