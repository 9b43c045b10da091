"""Accessibility: axe-core (axe-playwright-python, which ships axe.min.js) over every page a
signed-in team admin reaches by following links from the dashboard, plus the sign-in page; no
serious or critical violation anywhere. Each page's screenshot is kept as a test artifact."""

from __future__ import annotations

import re
from urllib.parse import urldefrag, urlsplit

import pytest

from tests.e2e.conftest import login, snap

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Not pages of Modeldeck's own UI (Django's admin, the API browser) or not pages at all.
SKIPPED = re.compile(
    r"^/(admin|api|static|media|metrics|healthz)\b|/logout/|/files/|/manifests|\.(yaml|csv|onnx)$"
)
MAX_PAGES = 80
BLOCKING = {"serious", "critical"}


@pytest.fixture(scope="module")
def demo(stack, admin_credentials):
    """The demo team's models and endpoint, with the journey's admin in that team too."""
    stack.manage("quickstart")
    stack.manage("addmember", admin_credentials[0], "demo", "admin")
    return stack


def _violations(page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    found = []
    for violation in results.response["violations"]:
        if violation.get("impact") in BLOCKING:
            targets = [", ".join(node["target"]) for node in violation["nodes"][:3]]
            found.append(f"{violation['impact']} {violation['id']}: {violation['help']} {targets}")
    return found


def _page_name(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-") or "home"


def _links(page) -> list[str]:
    hrefs = page.eval_on_selector_all(
        "a[href]:not([download])", "nodes => nodes.map(n => n.getAttribute('href'))"
    )
    paths = []
    for href in hrefs:
        href = urldefrag(href or "")[0]
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or not parts.path.startswith("/"):
            continue  # another site, mailto:, javascript:
        if parts.query or SKIPPED.search(parts.path):
            continue  # filtered views of a page already visited; not our UI
        paths.append(parts.path)
    return paths


def test_no_page_has_a_serious_or_critical_accessibility_violation(page, demo, admin_credentials):
    problems: dict[str, list[str]] = {}
    page.goto("/accounts/login/")
    snap(page, "a11y-sign-in")
    problems["/accounts/login/"] = _violations(page)

    login(page, admin_credentials)
    queue, seen = ["/"], set()
    while queue and len(seen) < MAX_PAGES:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        response = page.goto(path)
        if (
            response is None
            or response.status != 200
            or "text/html" not in (response.headers.get("content-type", ""))
        ):
            continue
        page.wait_for_load_state("networkidle")
        snap(page, f"a11y-{_page_name(path)}")
        problems[path] = _violations(page)
        queue.extend(link for link in _links(page) if link not in seen)

    visited = set(problems)
    # The crawl must have reached the pages this issue is about, not only the dashboard.
    for expected in ("/", "/models/", "/endpoints/", "/targets/", "/experiments/"):
        assert expected in visited, sorted(visited)
    assert any(path.startswith("/endpoints/house-prices") for path in visited), sorted(visited)
    assert any(re.match(r"^/models/[^/]+/$", path) for path in visited), sorted(visited)
    failing = {path: found for path, found in problems.items() if found}
    assert failing == {}, "\n".join(
        f"{path}:\n  " + "\n  ".join(found) for path, found in failing.items()
    )
