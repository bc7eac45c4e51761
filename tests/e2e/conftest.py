"""Browser fixtures: Playwright (Python) driving Debian's Chromium headless.

Playwright's own browser download is not reachable from these machines, so the tests use the
system Chromium (`make test` installs Debian's `chromium` package when it is missing and the
user is root; otherwise: `sudo apt-get install chromium`). The user guide's screenshots (one
per tab, taken by test_browser_flow.py) go to $TAILOR_SCREENSHOTS (default:
tests/e2e/screenshots/, ignored by git; docs/screenshots to refresh the guide); other tests'
pictures always go to tests/e2e/screenshots/, so they never land in docs/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str | None:
    return os.environ.get("TAILOR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


# Module scope, not session: Playwright's sync API keeps an asyncio loop running in the main
# thread while it is open, which would break later tests that call asyncio.run().
@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        pytest.skip("Chromium is not installed: `sudo apt-get install chromium` (make test does it as root)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    p = context.new_page()
    p.set_default_timeout(60_000)
    # expect() waits 5 s by default, too short for a tab's handler on 2 cores shared with a
    # training job or other tests; these are upper bounds to wait, not timing assertions.
    expect.set_options(timeout=60_000)
    yield p
    context.close()


REVIEW_FOLDER = Path(__file__).parent / "screenshots"


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the guide's per-tab screenshots go ($TAILOR_SCREENSHOTS)."""
    folder = Path(os.environ.get("TAILOR_SCREENSHOTS", REVIEW_FOLDER))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def review_screenshots() -> Path:
    """Where other browser tests put pictures for review (never the guide's folder)."""
    REVIEW_FOLDER.mkdir(parents=True, exist_ok=True)
    return REVIEW_FOLDER


# ---- page helpers shared by the browser tests -------------------------------------------------
def visible_panel(page):
    """The tab panel on show (Gradio renders visited tabs and hides the others)."""
    return page.get_by_role("tabpanel").filter(visible=True)


def open_tab(page, name: str):
    from playwright.sync_api import expect

    page.get_by_role("tab", name=name, exact=True).click()
    expect(page.get_by_role("tab", name=name, exact=True)).to_have_attribute("aria-selected", "true")
    return visible_panel(page)


def grid_rows(scope, name: str) -> list[dict]:
    """A Gradio Dataframe's visible rows as dicts (header -> cell text)."""
    grid = scope.get_by_role("grid", name=name)
    headers = [h.inner_text().strip() for h in grid.get_by_role("columnheader").all()]
    rows: dict[str, dict] = {}
    for cell in grid.get_by_role("gridcell").all():
        row, col = cell.get_attribute("data-row"), int(cell.get_attribute("data-col"))
        rows.setdefault(row, {})[headers[col]] = cell.inner_text().strip()
    return [rows[k] for k in sorted(rows, key=int)]
