"""Journey: a deployer rolls an endpoint back while an A/B experiment runs on it. The endpoint
page warns that the rollback ends the experiment (in the confirmation itself), and the
experiment page then shows it stopped, with the reason."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login, snap
from tests.e2e.stack import free_port, serving_port_block
from tests.registry import onnx_files

pytestmark = pytest.mark.browser

ENDPOINT = "e2e-ab"

# Versions registered and validated the way a worker does it, an endpoint on the team's local
# target, and an experiment started on it (release 2 splits iris-ab:1 / iris-ab:2 50/50).
SETUP = """
from pathlib import Path
from accounts.actor import Actor
from accounts.models import Team
from deployments import services as deployments
from deployments.models import Target
from monitoring import experiments
from monitoring import services as monitoring_services
from registry import services as registry, tasks
from registry.uploads import HashedUpload

actor = Actor.system("e2e")
team = Team.objects.get(name="e2e-team")
model = registry.model_create(actor=actor, team=team, name="iris-ab", description="A/B")
for name in ("a.onnx", "b.onnx"):
    version = registry.version_register(
        actor=actor, model=model, file=HashedUpload.from_path(Path({folder!r}) / name)
    )
    tasks.validate_version(version.pk)
endpoint = deployments.endpoint_create(
    actor=actor, name={endpoint!r}, target=Target.objects.get(name="e2e-local"), version="iris-ab:1"
)
experiment = monitoring_services.experiment_create(
    actor=actor, endpoint=endpoint, name="ranker-ab", control="iris-ab:1",
    treatment="iris-ab:2", metric="accuracy", minimum_effect=0.05,
)
monitoring_services.experiment_start(actor=actor, experiment=experiment)
print("EXPERIMENT", experiment.pk)
"""


def _serving_ports() -> str:
    """This developer's or CI's port range when given, else a random block (as the shared
    stack does)."""
    given = os.environ.get("LOCAL_TARGET_PORT_RANGE", "")
    if re.fullmatch(r"\d+-\d+", given):
        low, high = (int(part) for part in given.split("-"))
        if high - low >= 200:
            return f"{low + 100}-{low + 199}"
    return serving_port_block()


def _web_port() -> int:
    given = os.environ.get("LOCAL_TARGET_PORT_RANGE", "")
    if re.fullmatch(r"\d+-\d+", given):
        return int(given.split("-")[0]) + 50
    return free_port()


@pytest.fixture(scope="module")
def running_experiment(stack, admin_credentials, tmp_path_factory):
    stack.manage("ensure_local_target", "e2e-team", "--name", "e2e-local")
    folder = tmp_path_factory.mktemp("ab-models")
    onnx_files.save(onnx_files.mlp_classifier(), folder / "a.onnx")
    onnx_files.save(onnx_files.mlp_classifier(hidden=12), folder / "b.onnx")
    output = stack.manage("shell", "-c", SETUP.format(folder=str(folder), endpoint=ENDPOINT))
    return int(re.search(r"EXPERIMENT (\d+)", output).group(1))


def test_rolling_back_during_an_experiment_ends_it_with_its_reason(
    page, admin_credentials, running_experiment
):
    login(page, admin_credentials)
    page.goto(f"/experiments/{running_experiment}/")
    expect(page.locator("h1 .badge")).to_have_text("Running")

    page.goto(f"/endpoints/{ENDPOINT}/")
    notice = page.locator("#running-experiment")
    expect(notice).to_contain_text("A/B experiment ranker-ab is running")
    expect(notice).to_contain_text("rolling back or stopping ends it")
    snap(page, "endpoint-with-running-experiment")

    questions: list[str] = []

    def answer(dialog):
        questions.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer)
    rollback = page.locator("form[action$='/rollback/']").filter(
        has=page.locator("input[name=release][value='1']")
    )
    rollback.locator("button").click()
    page.wait_for_url(re.compile(rf".*/endpoints/{ENDPOINT}/$"))
    assert len(questions) == 1
    assert questions[0].startswith(f"Roll {ENDPOINT} back to release 1?")
    assert "A/B experiment ranker-ab is running on e2e-ab" in questions[0]
    assert "ends it, and outcomes after that are not counted" in questions[0]
    expect(page.locator("#running-experiment")).to_have_count(0)

    page.goto("/experiments/")
    page.get_by_role("link", name="ranker-ab").click()
    expect(page.locator("h1 .badge")).to_have_text("Stopped")
    reason = "ended by the rollback to release 1 by erin"
    expect(page.locator("[data-ended-reason]")).to_contain_text(reason)
    expect(page.locator("[data-verdict]")).to_contain_text(
        "Ended by the rollback to release 1 by erin, before a verdict"
    )
    snap(page, "experiment-ended-by-rollback")
