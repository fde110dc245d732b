"""Fixtures of the web UI tests: a real `modelmill serve` (one training worker), a key made with
`modelmill token create`, and Debian's Chromium driven by Playwright. Screenshots of every page go
to test-artifacts/screenshots/.

Run: `.venv/bin/pytest -m browser tests/web` (needs /usr/bin/chromium: apt-get install chromium).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Server, make_server
from web.helpers import USER

CHROMIUM = Path(os.environ.get("MODELMILL_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
VIEWPORT = {"width": 1366, "height": 860}  # a laptop screen


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the browser tests, with one training worker; tests use an app each."""
    server = make_server(tmp_path_factory.mktemp("web-server"), settings={"MODELMILL_WORKERS": "1"})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ui_key(ui_server: Server) -> str:
    return ui_server.token(USER)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, ui_server: Server) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT, base_url=ui_server.http_url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def shoot() -> Any:
    """`shoot(page, "03-inputs")` saves a full-page screenshot for people to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def save(page: Any, name: str) -> Path:
        # Lazy images below the fold would stay blank in a full-page shot; the sticky bars would
        # sit mid-page if the page were scrolled.
        page.evaluate(
            "document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager')"
        )
        page.wait_for_function("Array.from(document.images).every(i => i.complete || i.hidden)")
        page.evaluate("window.scrollTo(0, 0)")
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
