"""What every page sends: escaped user text, security headers, downloads as attachments.

The world (tests/security/world.py) writes a hostile payload into every text a user can type;
every page of the route walk is then fetched as the team's admin.
"""

import html
import re
from html.parser import HTMLParser

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.security.world import project_routes, xss

pytestmark = pytest.mark.django_db

# Fields whose text the pages show; each must appear (escaped) on at least one page.
SHOWN_FIELDS = [
    "description",
    "tag_value",
    "alias_reason",
    "approval_comment",
    "target_description",
    "deploy_note",
    "build_log",
    "webhook_name",
    "rule_name",
    "token_name",
    "param",
    "fleet_description",
    "device_label",
    "device_reason",
    "input_name",
    "experiment_name",
]


def _body(response) -> str:
    content = b"".join(response.streaming_content) if response.streaming else response.content
    return content.decode("utf-8", "replace")


@pytest.fixture
def pages(world):
    """(path, response) of every page and API GET route, as the team's admin (staff too, so
    staff-only pages render)."""
    world.owner.is_staff = True
    world.owner.save()
    client = Client()
    client.force_login(world.owner)
    api = APIClient()
    api.force_authenticate(world.owner)
    fetched = []
    for route in project_routes():
        if route.template in ("/accounts/logout/",) or any(
            key not in world.values for key in route.parameters
        ):
            continue  # test_every_route_parameter_is_known reports these
        path = route.fill(world.values)
        if route.template.endswith("/compare/"):
            path += "?a=1&b=2"
        response = (api if route.is_api else client).get(path)
        fetched.append((route, path, response))
    return fetched


def test_every_page_renders_for_the_owner(pages):
    broken = [f"{p} -> {r.status_code}" for route, p, r in pages if r.status_code >= 500]
    assert broken == []
    html_pages = [p for route, p, r in pages if r.get("Content-Type", "").startswith("text/html")]
    assert len(html_pages) > 25


def test_no_user_text_reaches_a_page_unescaped(pages):
    raw = []
    for _route, path, response in pages:
        if not response.get("Content-Type", "").startswith("text/html"):
            continue  # JSON answers carry the text as data (application/json + nosniff)
        body = _body(response)
        for needle in ("<script>alert(", "<img src=x onerror"):
            if needle in body:
                raw.append(f"{path}: {needle}")
    assert raw == []


@pytest.mark.parametrize("field", SHOWN_FIELDS)
def test_each_user_text_field_is_shown_escaped(pages, field):
    escaped_forms = {html.escape(xss(field)), html.escape(xss(field))[:60]}
    found = [
        path
        for route, path, response in pages
        if route.is_page and any(form in _body(response) for form in escaped_forms)
    ]
    assert found, f"{field} is not shown on any page, so the escaping test proves nothing"


def test_the_fleet_endpoint_shows_its_rollout_notes_escaped(world):
    """The walk fills {name} with the world's local endpoint; the fleet's endpoint carries the
    notes of its creation and of the rollout."""
    client = Client()
    client.force_login(world.owner)
    response = client.get(f"/endpoints/{world.fleet_endpoint.name}/")
    assert response.status_code == 200
    body = _body(response)
    assert "<script>alert(" not in body and "<img src=x onerror" not in body
    for field in ("fleet_note", "rollout_note"):
        assert html.escape(xss(field))[:60] in body, field


def test_json_islands_cannot_close_their_script_tag(pages):
    """Data for charts goes into <script type="application/json"> islands: a `</script>` inside
    user text must not end them (Django's json_script escapes < > &)."""
    for _route, path, response in pages:
        body = _body(response)
        for island in re.findall(
            r'<script[^>]*type="application/json"[^>]*>(.*?)</script>', body, re.S
        ):
            assert "<" not in island, path


def test_every_response_carries_the_security_headers(pages):
    missing = []
    for _route, path, response in pages:
        headers = response.headers
        csp = headers.get("Content-Security-Policy", "")
        script_src = next(
            (part for part in csp.split(";") if part.strip().startswith("script-src")), ""
        )
        problems = []
        if "script-src 'self'" not in script_src or "unsafe-inline" in script_src:
            problems.append(f"script-src={script_src!r}")
        if "unsafe-eval" in csp:
            problems.append("unsafe-eval")
        if "frame-ancestors 'none'" not in csp:
            problems.append("frame-ancestors")
        if headers.get("X-Frame-Options") != "DENY":
            problems.append(f"X-Frame-Options={headers.get('X-Frame-Options')}")
        if headers.get("X-Content-Type-Options") != "nosniff":
            problems.append("nosniff")
        if headers.get("Referrer-Policy") != "same-origin":
            problems.append(f"Referrer-Policy={headers.get('Referrer-Policy')}")
        if problems:
            missing.append(f"{path}: {', '.join(problems)}")
    assert missing == []


class _HandlerFinder(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found = []

    def handle_starttag(self, tag, attrs):
        self.found += [(tag, name) for name, _value in attrs if name.lower().startswith("on")]


def _event_handlers(body: str) -> list[tuple[str, str]]:
    finder = _HandlerFinder()
    finder.feed(body)
    return finder.found


def test_no_page_has_inline_scripts_or_event_handlers(pages):
    """The CSP forbids inline scripts; a template that uses one would break in browsers."""
    inline = []
    for _route, path, response in pages:
        if not response.get("Content-Type", "").startswith("text/html"):
            continue
        body = _body(response)
        for match in re.finditer(r"<script(?![^>]*\bsrc=)([^>]*)>", body):
            if 'type="application/json"' not in match.group(1):
                inline.append(f"{path}: <script{match.group(1)}>")
        inline += [f"{path}: <{tag} {name}=>" for tag, name in _event_handlers(body)]
    assert inline == []


def test_error_pages_carry_the_headers_too(client, world):
    client.force_login(world.owner)
    response = client.get("/models/no-such-model/")
    assert response.status_code == 404
    assert response["X-Frame-Options"] == "DENY"
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert response["X-Content-Type-Options"] == "nosniff"


def test_every_download_is_an_attachment_with_a_server_chosen_name(pages):
    downloads = [
        (path, response)
        for route, path, response in pages
        if response.streaming or "download" in route.template or "/files/" in route.template
    ]
    assert len(downloads) >= 2
    for path, response in downloads:
        assert response.status_code == 200, path
        disposition = response["Content-Disposition"]
        assert disposition.startswith("attachment;"), (path, disposition)
        assert re.fullmatch(
            r'attachment; filename="secret-model-2(-\w+)?\.(onnx|csv|zip)"', disposition
        )
        # Never a type a browser renders: opaque bytes, or the Triton export's zip.
        assert response["Content-Type"] in {"application/octet-stream", "application/zip"}
        assert response["X-Content-Type-Options"] == "nosniff"
