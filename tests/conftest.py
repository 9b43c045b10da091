"""Fixtures every test tier shares: teams, members of each role, API clients, tiers."""

import os
import shutil

import pytest
from rest_framework.test import APIClient

from accounts.actor import Actor
from accounts.models import Role
from accounts.services import token_create
from tests.factories import MembershipFactory, TeamFactory, UserFactory

# Playwright's sync API (the browser journeys) keeps an event loop running in an xdist
# worker's main thread while its browser is open, and Django then refuses the synchronous ORM
# calls of every test that worker runs next (SynchronousOnlyOperation: 81 errors in one CI run).
# The apps have no async code, so the tests lift that check; the stacks the e2e tier serves keep
# it (tests/e2e/stack.py leaves the variable out of their environment).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

REQUIRED_TIERS = {
    t.strip() for t in os.environ.get("MODELDECK_REQUIRE_TIERS", "").split(",") if t.strip()
}


def worker_port_block(port_range: str, worker: str, workers: int) -> tuple[int, int]:
    """The share of `port_range` ("low-high") that xdist worker `worker` ("gw3") of `workers`
    binds in: equal, disjoint blocks, so parallel workers never take each other's ports."""
    low, high = (int(part) for part in port_range.split("-"))
    size = (high - low + 1) // max(workers, 1)
    if size < 10:
        raise pytest.UsageError(
            f"LOCAL_TARGET_PORT_RANGE {port_range} is too small for -n {workers}"
        )
    start = low + int(worker.removeprefix("gw")) * size
    return start, start + size - 1


def _use_the_worker_port_block() -> None:
    """Under `pytest -n`, serving processes (LOCAL_TARGET_PORT_RANGE, also inherited by child
    processes) and the live server use the worker's own block of the configured range; the
    live server takes the block's last port."""
    from django.conf import settings

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    # The whole range, for tests that pick a block of their own outside every worker's
    # (tests.e2e.stack.serving_port_block).
    os.environ.setdefault("MODELDECK_TEST_PORT_RANGE", str(settings.LOCAL_TARGET_PORT_RANGE))
    low, high = worker_port_block(str(settings.LOCAL_TARGET_PORT_RANGE), worker, workers)
    settings.LOCAL_TARGET_PORT_RANGE = os.environ["LOCAL_TARGET_PORT_RANGE"] = f"{low}-{high - 1}"
    os.environ["DJANGO_LIVE_TEST_SERVER_ADDRESS"] = f"localhost:{high}"


_use_the_worker_port_block()


def tier_unavailable(tier: str, reason: str):
    """Skip a tier that cannot run here, unless CI said this tier must run (then fail)."""
    if tier in REQUIRED_TIERS:
        pytest.fail(f"the {tier} tier must run here (MODELDECK_REQUIRE_TIERS) but: {reason}")
    pytest.skip(reason)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("browser") and not shutil.which("chromium"):
            item.add_marker(pytest.mark.usefixtures("_require_chromium"))


@pytest.fixture
def _require_chromium():
    if not shutil.which("chromium"):
        tier_unavailable("browser", "Debian's chromium is not installed")


@pytest.fixture
def team(db):
    return TeamFactory(name="alpha")


@pytest.fixture
def other_team(db):
    return TeamFactory(name="bravo")


def _member(team, role, username):
    return MembershipFactory(user=UserFactory(username=username), team=team, role=role).user


@pytest.fixture
def viewer(team):
    return _member(team, Role.VIEWER, "vera-viewer")


@pytest.fixture
def scientist(team):
    return _member(team, Role.SCIENTIST, "sam-scientist")


@pytest.fixture
def deployer(team):
    return _member(team, Role.DEPLOYER, "dana-deployer")


@pytest.fixture
def admin_member(team):
    return _member(team, Role.ADMIN, "ada-admin")


@pytest.fixture
def outsider(other_team):
    """An admin of another team: everything of `team` must be invisible to them."""
    return _member(other_team, Role.ADMIN, "olga-outsider")


def actor_for(user, team=None) -> Actor:
    """The actor a browser session of `user` would be (all their teams)."""
    from accounts.models import Membership

    roles = dict(Membership.objects.filter(user=user).values_list("team_id", "role"))
    if team is not None:
        roles = {team.pk: roles[team.pk]}
    return Actor(user=user, label=user.get_username(), ip="127.0.0.1", roles=roles)


@pytest.fixture
def make_actor():
    return actor_for


def token_client(user, team) -> APIClient:
    """An API client authenticated with a fresh bearer token of `user` in `team`."""
    _token, plain = token_create(actor=Actor.system("tests"), user=user, team=team, name="test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    return client


@pytest.fixture
def api_for():
    """`api_for(user, team)` → an APIClient with a bearer token."""
    return token_client


@pytest.fixture
def scientist_api(scientist, team):
    return token_client(scientist, team)


@pytest.fixture
def deployer_api(deployer, team):
    return token_client(deployer, team)


@pytest.fixture
def viewer_api(viewer, team):
    return token_client(viewer, team)


@pytest.fixture
def outsider_api(outsider, other_team):
    return token_client(outsider, other_team)


def pytest_terminal_summary(terminalreporter):
    """Print how many browser journeys, security cases and fault cases ran and passed."""
    tiers = {"browser journeys": "tests/e2e/", "security cases": "tests/security/"}
    counts = {name: [0, 0] for name in [*tiers, "fault cases"]}
    for outcome in ("passed", "failed", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") != "call" and outcome != "error":
                continue
            names = [name for name, prefix in tiers.items() if report.nodeid.startswith(prefix)]
            if "fault" in getattr(report, "keywords", ()):
                names.append("fault cases")
            for name in names:
                counts[name][0 if outcome == "passed" else 1] += 1
    line = ", ".join(f"{name}: {ok} passed, {bad} failed" for name, (ok, bad) in counts.items())
    terminalreporter.write_line(f"Modeldeck tiers — {line}")
