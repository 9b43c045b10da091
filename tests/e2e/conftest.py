"""Browser journeys: a live Modeldeck stack and Playwright driving Debian's Chromium."""

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import tier_unavailable
from tests.e2e.stack import ROOT, Stack

SCREENSHOTS = Path(os.environ.get("MODELDECK_SCREENSHOT_DIR", ROOT / "var" / "screenshots"))
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    if not shutil.which("chromium"):
        tier_unavailable("browser", "Debian's chromium is not installed")
    running = Stack(var_dir=tmp_path_factory.mktemp("e2e-stack")).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def browser(stack):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, stack, request):
    """A fresh browser page; the test fails on any JavaScript console error or page error."""
    context = browser.new_context(base_url=stack.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on(
        "console",
        lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on(
        "response",
        lambda r: (
            errors.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 and r.request.resource_type != "document"
            else None
        ),
    )
    page.screenshot_dir = SCREENSHOTS / re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
    yield page
    context.close()
    assert errors == [], "JavaScript errors:\n" + "\n".join(errors)


def snap(page, name: str) -> None:
    """Save a screenshot of the page's current state for the CI artifacts."""
    page.screenshot_dir.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(page.screenshot_dir / f"{name}.png"), full_page=True)


@pytest.fixture(scope="session")
def admin_credentials(stack):
    """An admin of team e2e-team, created the way an operator would: `addmember --create-user`."""
    output = stack.manage("addmember", "erin", "e2e-team", "admin", "--create-user")
    password = re.search(r"with password: (\S+)", output).group(1)
    return "erin", password


def login(page, credentials) -> None:
    username, password = credentials
    page.goto("/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/$"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed journey shows the tails of the stack's logs (web, worker, beat)."""
    outcome = yield
    report = outcome.get_result()
    running = item.funcargs.get("stack") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(running, Stack):
        report.sections.append(("modeldeck stack logs", running.logs()))
