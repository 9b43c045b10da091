"""Edge pages say what applies to a fleet: the enrollment command with this dashboard's address
and the new code, a way to make the fleet's endpoint when it has none, and an endpoint page
without split or shadow controls."""

import re
from html import unescape

import pytest
from django.test import Client

from deployments.models import Target
from tests.security.conftest import world  # noqa: F401

pytestmark = pytest.mark.django_db


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_enrollment_panel_prints_the_runnable_command(admin_member, world):  # noqa: F811
    client = signed_in(admin_member)
    page = client.post(f"/fleet/{world.fleet.name}/codes/", {"labels": "", "hours": 2})
    html = page.content.decode()
    code = re.search(r'<pre class="token">([^<]+)</pre>', html).group(1)
    command = unescape(re.search(r'<pre id="enroll-command"><code>(.*?)</code>', html, re.S)[1])
    assert command.splitlines()[0] == (
        f"modeldeck-agent enroll --server http://testserver --code {code} "
        "--name device-1 --dir /var/lib/modeldeck"
    )
    assert "URL" not in command and "CODE" not in command


def test_a_fleet_without_an_endpoint_offers_to_make_one(admin_member, team):
    Target.objects.create(team=team, name="empty-fleet", kind="edge")
    client = signed_in(admin_member)
    html = client.get("/fleet/empty-fleet/").content.decode()
    assert 'id="fleet-needs-endpoint"' in html
    assert 'href="/endpoints/new/?target=empty-fleet"' in html
    assert "Start rollout</button>" not in html
    form = client.get("/endpoints/new/?target=empty-fleet").content.decode()
    assert '<option value="empty-fleet" selected>' in form


def test_a_fleet_endpoint_page_has_no_split_or_shadow_controls(admin_member, world):  # noqa: F811
    html = signed_in(admin_member).get(f"/endpoints/{world.fleet_endpoint.name}/").content
    html = html.decode()
    assert "Fleet version" in html
    assert "Apply split" not in html and "traffic-form" not in html
    assert "Promote candidate" not in html
    assert f'href="/fleet/{world.fleet.name}/"' in html
