"""Journey: an organisation signs in with its identity provider; passwords are off.

A real OpenID Connect provider (tests/oidc_provider/, django-oauth-toolkit) runs as its own
process beside a whole Modeldeck stack configured from the provider's discovery document.
"""

import json
import re
import shutil
from dataclasses import dataclass, field

import pytest

from tests.conftest import tier_unavailable
from tests.e2e.conftest import SCREENSHOTS
from tests.e2e.stack import Stack
from tests.oidc_provider.server import Provider, port_in_range

pytestmark = pytest.mark.browser

PERSON = {"username": "olivia", "password": "olivia-pass-1", "email": "olivia@example.org"}


@dataclass
class SingleSignOnStack(Stack):
    """The usual stack with the operator's single sign-on variables."""

    port: int = field(default_factory=lambda: port_in_range("29300-29399"))
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, **self.extra_env}


@pytest.fixture(scope="module")
def sso_stack(tmp_path_factory):
    if not shutil.which("chromium"):
        tier_unavailable("browser", "Debian's chromium is not installed")
    stack = SingleSignOnStack(var_dir=tmp_path_factory.mktemp("e2e-sso-stack"))
    provider = Provider(
        state_dir=tmp_path_factory.mktemp("e2e-oidc-provider"),
        redirect_uris=[f"{stack.url}/oidc/callback/"],
        port=port_in_range("29400-29499"),
    )
    provider.start(users=[{**PERSON, "groups": ["modeldeck-ml"]}])
    stack.extra_env = {
        **provider.relying_party_settings(),
        "OIDC_PROVIDER_NAME": "Example SSO",
        "OIDC_TEAM_ROLE_MAP": json.dumps({"modeldeck-ml": "ml-platform:deployer"}),
        "LOCAL_PASSWORDS_ENABLED": "false",
    }
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        provider.stop()


@pytest.fixture
def sso_page(sso_stack, browser, request):
    # The session's browser (tests/e2e/conftest.py): one Playwright per process.
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on(
        "console",
        lambda m: (
            errors.append(f"console.{m.type}: {m.text}")
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    # Failed loads are checked by URL instead: the test provider has no favicon.
    page.on(
        "response",
        lambda r: (
            errors.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 and sso_stack.url in r.url
            else None
        ),
    )
    page.screenshot_dir = SCREENSHOTS / re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
    yield page
    context.close()
    assert errors == [], "JavaScript errors:\n" + "\n".join(errors)


def _snap(page, name: str) -> None:
    page.screenshot_dir.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(page.screenshot_dir / f"{name}.png"), full_page=True)


def test_sign_in_through_the_identity_provider_lands_on_the_dashboard_in_the_mapped_team(
    sso_stack, sso_page
):
    page = sso_page
    page.goto(f"{sso_stack.url}/accounts/login/")
    # Passwords are off: the page offers only the provider.
    assert page.locator("#id_password").count() == 0
    _snap(page, "1-login-sso-only")
    page.click("text=Sign in with Example SSO")
    page.wait_for_selector("text=Test identity provider")
    assert page.url.startswith("http://127.0.0.1:29")
    assert f":{sso_stack.port}/" not in page.url
    page.fill("#provider-username", PERSON["username"])
    page.fill("#provider-password", PERSON["password"])
    _snap(page, "2-provider-login")
    page.click("text=Continue")
    page.wait_for_url(f"{sso_stack.url}/")
    assert page.locator("h1").inner_text() == "Dashboard"
    assert page.locator("text=You are not in a team yet").count() == 0
    assert "Sign out olivia" in page.locator(".usermenu").inner_text()
    _snap(page, "3-dashboard")
    # The mapped team and role, and the audit rows of the sync.
    page.goto(f"{sso_stack.url}/accounts/tokens/")
    assert page.locator("#id_team option", has_text="ml-platform").count() == 1
    page.goto(f"{sso_stack.url}/accounts/audit/")
    body = page.locator("main").inner_text()
    assert "membership.set" in body
    assert "olivia (single sign-on)" in body
    _snap(page, "4-audit-log")
