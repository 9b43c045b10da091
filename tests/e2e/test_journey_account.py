"""Journey: sign in, create and revoke an API token, find both in the audit log."""

import re

import pytest

from tests.e2e.conftest import login, snap

pytestmark = pytest.mark.browser


def test_sign_in_create_token_and_find_it_in_the_audit_log(page, admin_credentials):
    page.goto("/")
    page.wait_for_url(re.compile(r".*/accounts/login/\?next=/$"))
    snap(page, "01-login")
    login(page, admin_credentials)
    assert page.locator("h1").inner_text() == "Dashboard"
    snap(page, "02-dashboard")

    page.click("text=API tokens")
    page.select_option("#id_team", label="e2e-team")
    page.fill("#id_name", "journey-token")
    page.click("button:has-text('Create token')")
    token = page.locator("#new-token").inner_text()
    assert re.fullmatch(r"mdk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", token)
    snap(page, "03-token-created")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Revoke')")
    assert page.locator(".message.success").inner_text() == "Token journey-token revoked."

    page.click("nav >> text=Audit")
    rows = page.locator("table tbody tr")
    assert rows.count() >= 2
    assert rows.nth(0).locator("td").nth(2).inner_text() == "token.revoke"
    assert rows.nth(1).locator("td").nth(2).inner_text() == "token.create"
    snap(page, "04-audit-log")
