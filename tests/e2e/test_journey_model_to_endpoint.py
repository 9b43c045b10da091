"""Journeys from a model file to live traffic, in the order a data scientist walks them.

Each test is one journey and starts from a fresh browser session; they share one stack and
build on each other (the endpoint of journey 4 is the one journey 5 sends traffic to), so they
run in file order. The validation, the reconciler, the serving processes and the metrics
scraper are the real ones, run by the stack's Celery worker and beat.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections import Counter

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login, snap
from tests.registry import onnx_files

# The journeys build on each other: dev.py test runs a file's tests on one worker, in order
# (--dist loadfile).
pytestmark = pytest.mark.browser

MODEL = "e2e-iris"
ENDPOINT = "e2e-iris-live"
# Waits on the worker: validation in a sandboxed subprocess, serving processes starting.
WORKER_TIMEOUT_MS = 90_000
# The big first version makes the upload take a few seconds at this (emulated) uplink speed,
# so the progress bar can be seen moving.
UPLOAD_BYTES_PER_SECOND = 512 * 1024
HIDDEN_UNITS_OF_BIG_MODEL = 60_000


@pytest.fixture(scope="module")
def journey(stack, admin_credentials, tmp_path_factory):
    """What the journeys share: the admin's credentials, the model files, the endpoint URL."""
    # The operator step a fresh install needs: a local-process target for the team.
    stack.manage("ensure_local_target", "e2e-team", "--name", "e2e-local")
    folder = tmp_path_factory.mktemp("models")
    return {
        "credentials": admin_credentials,
        "first_file": onnx_files.save(
            onnx_files.mlp_classifier(hidden=HIDDEN_UNITS_OF_BIG_MODEL), folder / "iris-big.onnx"
        ),
        "second_file": onnx_files.save(onnx_files.mlp_classifier(), folder / "iris-small.onnx"),
    }


def infer(url: str, rows: int = 1) -> tuple[str, dict]:
    """One Open Inference Protocol request to the endpoint: (answering version, body)."""
    body = {
        "inputs": [
            {
                "name": "x",
                "shape": [rows, 4],
                "datatype": "FP32",
                "data": [5.1, 3.5, 1.4, 0.2] * rows,
            }
        ]
    }
    request = urllib.request.Request(
        f"{url}/v2/models/{ENDPOINT}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return response.headers["x-model-version"], json.loads(response.read())


# The sum of every point of every line of a drawn Plotly chart.
DRAWN_REQUEST_RATE = """chart => (chart.data || []).reduce(
    (sum, trace) => sum + (trace.y || []).reduce((a, b) => a + (b || 0), 0), 0)"""


def endpoint_url(page) -> str:
    url = page.locator("main p.muted code").first.inner_text()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), url
    return url


def wait_until_live(page) -> None:
    """The endpoint page polls while the change applies, then reloads itself once it settles."""
    expect(page.locator("h1 .badge")).to_have_text("live", timeout=WORKER_TIMEOUT_MS)


def accept_confirmations(page, questions: list[str]) -> None:
    """Answer yes to the page's confirm dialogs and remember what they asked."""

    def accept(dialog):
        questions.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)


def set_upload_speed(cdp, bytes_per_second: int) -> None:
    """Emulate a slow uplink in Chromium (-1: no limit)."""
    conditions = {"offline": False, "latency": 0, "downloadThroughput": -1}
    cdp.send(
        "Network.emulateNetworkConditions", {**conditions, "uploadThroughput": bytes_per_second}
    )


def test_upload_a_model_and_watch_progress_and_validation(page, journey):
    login(page, journey["credentials"])
    page.click("nav >> text=Models")
    expect(page.locator("h1")).to_have_text("Models")
    form = page.locator("#model-create")
    form.locator("#id_name").fill(MODEL)
    form.locator("#id_team").select_option(label="e2e-team")
    form.locator("#id_description").fill("Iris species from sepal and petal sizes.")
    form.locator("#id_tags").fill("task=classification")
    form.locator("button[type=submit]").click()

    page.wait_for_url(f"**/models/{MODEL}/upload/")
    expect(page.locator(".message.success")).to_have_text(
        f"Model {MODEL} created. Upload its first version."
    )
    expect(page.locator("h1")).to_have_text(f"Upload a version of {MODEL}")
    snap(page, "01-upload-page")

    page.set_input_files("#id_file", str(journey["first_file"]))
    page.fill("#id_metrics", '{"accuracy": 0.93}')
    size = journey["first_file"].stat().st_size
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    set_upload_speed(cdp, UPLOAD_BYTES_PER_SECOND)
    page.click("#upload-form button[type=submit]")

    # The bar moves: the browser reports part of the file sent, and the text says how much.
    page.wait_for_function(
        """() => {
            const bar = document.getElementById('upload-progress');
            return bar.max > 1 && bar.value > 0 && bar.value < bar.max;
        }""",
        timeout=20_000,
    )
    expect(page.locator("#upload-status")).to_be_visible()
    expect(page.locator("#upload-progress-text")).to_contain_text(" of ")
    expect(page.locator("#upload-form button[type=submit]")).to_be_disabled()
    snap(page, "02-upload-in-progress")
    total = page.eval_on_selector("#upload-progress", "bar => bar.max")
    assert total > size  # the whole multipart body: the file and the form's other fields

    # Validation runs in the worker; the page follows it through the API until it finishes.
    result = page.locator("#upload-result")
    expect(result.locator(".message")).to_have_text(
        "Version 1 is ready.", timeout=WORKER_TIMEOUT_MS
    )
    set_upload_speed(cdp, -1)
    assert page.eval_on_selector("#upload-progress", "bar => bar.value === bar.max")
    expect(result.locator("li")).to_have_text(
        [
            "input x: FP32 [-1, 4]",
            "output probabilities: FP32 [-1, 3]",
            "output label: INT64 [-1]",
        ]
    )
    snap(page, "03-upload-validated")

    result.locator("a", has_text="Open version 1").click()
    page.wait_for_url(f"**/models/{MODEL}/versions/1/")
    expect(page.locator("#version-status .badge").first).to_have_text("ready")
    expect(page.locator("#signature tbody tr")).to_have_count(3)
    expect(page.locator("table", has=page.locator("th:text-is('accuracy')"))).to_contain_text(
        "0.93"
    )
    expect(page.locator("#artifacts tbody tr td").nth(2)).to_have_attribute(
        "title", f"{size} bytes"
    )
    snap(page, "04-version-page")


def test_set_an_alias_on_the_model_page(page, journey):
    login(page, journey["credentials"])
    page.goto(f"/models/{MODEL}/")
    expect(page.locator("#alias-history")).to_contain_text("No alias has been set yet.")
    form = page.locator("#alias-set")
    form.locator("#id_name").fill("staging")
    form.locator("#id_version").fill("1")
    form.locator("#id_reason").fill("first validated version")
    form.locator("button[type=submit]").click()

    expect(page.locator(".message.success")).to_have_text(
        f"{MODEL}@staging now points at version 1."
    )
    aliases = page.locator("#aliases table tbody tr")
    expect(aliases).to_have_count(1)
    expect(aliases.locator("td").nth(0)).to_have_text(f"{MODEL}@staging")
    expect(aliases.locator("td").nth(1)).to_have_text("v1")
    history = page.locator("#alias-history li")
    expect(history).to_have_count(1)
    expect(history).to_contain_text("@staging set to v1")
    expect(history).to_contain_text("first validated version")
    expect(page.locator("#versions tbody tr").first.locator("td").nth(3)).to_have_text("@staging")
    snap(page, "05-alias-set")


def test_create_an_endpoint_on_the_local_target_and_watch_it_go_live(page, journey):
    login(page, journey["credentials"])
    page.goto(f"/models/{MODEL}/versions/1/")
    page.click("#deploy-version")
    page.wait_for_url(re.compile(r".*/endpoints/new/\?version="))
    expect(page.locator("h1")).to_have_text(f"Deploy {MODEL}:1")
    expect(page.locator("#id_version")).to_have_value(f"{MODEL}:1")
    page.fill("#id_name", ENDPOINT)
    page.select_option("#id_target", "e2e-local")
    snap(page, "06-endpoint-create")
    page.click("button:has-text('Create endpoint')")

    page.wait_for_url(f"**/endpoints/{ENDPOINT}/")
    expect(page.locator(".message.success").first).to_have_text(
        f"Endpoint {ENDPOINT} created; it is starting."
    )
    snap(page, "07-endpoint-starting")
    wait_until_live(page)
    expect(page.locator("#endpoint-progress")).not_to_have_attribute("hx-get", re.compile(".*"))
    url = endpoint_url(page)
    journey["url"] = url
    rows = page.locator("form.traffic-form tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.locator("td").nth(0)).to_have_text(f"{MODEL}:1")
    expect(rows.locator("input.traffic-weight")).to_have_value("100")
    snap(page, "08-endpoint-live")

    version, body = infer(url)
    journey["requests"] = 1
    assert version == f"{MODEL}:1"
    assert [output["name"] for output in body["outputs"]] == ["probabilities", "label"]


def test_send_traffic_and_see_the_charts_move(page, journey):
    login(page, journey["credentials"])
    page.goto(f"/endpoints/{ENDPOINT}/")
    page.click("nav.subnav >> text=Monitoring")
    page.wait_for_url(f"**/endpoints/{ENDPOINT}/monitoring/")
    expect(page.locator(".filters .muted")).to_contain_text("Live: redraws every")
    throughput = page.locator("#chart-throughput")
    # Plotly has drawn the figure once the element carries its data; remember what it shows.
    page.wait_for_function("() => Array.isArray(document.getElementById('chart-throughput').data)")
    before = page.eval_on_selector("#chart-throughput", DRAWN_REQUEST_RATE)
    snap(page, "09-monitoring-before-traffic")

    answered = Counter(infer(journey["url"], rows=2)[0] for _ in range(40))
    assert answered == {f"{MODEL}:1": 40}
    journey["requests"] += 40

    # Beat scrapes the gateway, the page's poll brings the new figures, charts.js redraws.
    page.wait_for_function(
        f"([before]) => ({DRAWN_REQUEST_RATE})(document.getElementById('chart-throughput'))"
        " > before",
        arg=[before],
        timeout=60_000,
    )
    expect(throughput.locator(".scatterlayer .trace")).not_to_have_count(0)
    row = page.locator("#monitoring-live table tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(0)).to_have_text(f"{MODEL}:1")
    expect(row.locator("td").nth(3)).to_have_text(str(journey["requests"]), timeout=30_000)
    snap(page, "10-monitoring-after-traffic")


def upload_second_version(page, journey) -> None:
    page.goto(f"/models/{MODEL}/")
    page.click("text=Upload a new version")
    page.set_input_files("#id_file", str(journey["second_file"]))
    page.click("#upload-form button[type=submit]")
    expect(page.locator("#upload-result .message")).to_have_text(
        "Version 2 is ready.", timeout=WORKER_TIMEOUT_MS
    )
    page.click("#upload-result >> text=Open version 2")
    page.wait_for_url(f"**/models/{MODEL}/versions/2/")


def test_deploy_a_second_version_and_change_the_traffic_split(page, journey):
    login(page, journey["credentials"])
    questions: list[str] = []
    accept_confirmations(page, questions)
    upload_second_version(page, journey)

    # From the version page to the existing endpoint, as a 20 % candidate.
    page.click("#deploy-version")
    row = page.locator("tr", has=page.locator(f"a:text-is('{ENDPOINT}')"))
    expect(row.locator("input[name=version]")).to_have_value(f"{MODEL}:2")
    row.locator("input[name=weight]").fill("20")
    row.locator("button:has-text('Deploy')").click()
    page.wait_for_url(f"**/endpoints/{ENDPOINT}/")
    assert questions == [f"Deploy this version to {ENDPOINT}?"]
    expect(page.locator(".message.success")).to_have_text("Release 2 written; applying it now.")
    wait_until_live(page)

    form = page.locator("form.traffic-form")
    rows = form.locator("tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.locator("td:first-child code")).to_have_text([f"{MODEL}:1", f"{MODEL}:2"])
    expect(rows.nth(0).locator("select")).to_have_value("primary")
    expect(rows.nth(1).locator("select")).to_have_value("candidate")
    expect(rows.nth(0).locator("input.traffic-weight")).to_have_value("80")
    expect(rows.nth(1).locator("input.traffic-weight")).to_have_value("20")
    expect(form.locator(".traffic-total")).to_have_text("Primary and candidate weights: 100 %")
    snap(page, "11-endpoint-with-candidate")

    # The running total guards the form while the split is being edited.
    rows.nth(0).locator("input.traffic-weight").fill("50")
    expect(form.locator(".traffic-total")).to_have_text(
        "Primary and candidate weights: 70 % (must be 100)"
    )
    expect(form.locator("button[type=submit]")).to_be_disabled()
    snap(page, "12-traffic-split-being-edited")
    rows.nth(1).locator("input.traffic-weight").fill("50")
    expect(form.locator(".traffic-total")).to_have_text("Primary and candidate weights: 100 %")
    form.locator("button[type=submit]").click()

    page.wait_for_url(f"**/endpoints/{ENDPOINT}/")
    expect(page.locator(".message.success")).to_have_text("Release 3 written; applying it now.")
    assert questions[1:] == [f"Apply the new traffic split to {ENDPOINT}?"]
    wait_until_live(page)
    for row in range(2):
        expect(rows.nth(row).locator("input.traffic-weight")).to_have_value("50")
    history = page.locator("main > table tbody tr")
    expect(history.first.locator("td").nth(1)).to_contain_text("Traffic change")
    snap(page, "13-traffic-split-applied")

    answered = Counter(infer(journey["url"])[0] for _ in range(60))
    journey["requests"] += 60
    assert set(answered) == {f"{MODEL}:1", f"{MODEL}:2"}, answered


def test_roll_back_with_the_confirmation_and_the_original_version_answers(page, journey):
    login(page, journey["credentials"])
    page.goto(f"/endpoints/{ENDPOINT}/")
    history = page.locator("main > table tbody tr")
    expect(history).to_have_count(3)
    first_release = history.filter(has=page.locator("td:first-child", has_text=re.compile("^1$")))
    rollback = first_release.locator("button:has-text('Roll back to this')")

    # Saying no to the question changes nothing.
    page.once("dialog", lambda dialog: dialog.dismiss())
    rollback.click()
    expect(history).to_have_count(3)
    expect(page.locator(".message")).to_have_count(0)

    questions: list[str] = []
    accept_confirmations(page, questions)
    rollback.click()
    page.wait_for_url(f"**/endpoints/{ENDPOINT}/")
    expect(page.locator(".message.success")).to_have_text("Release 4 written; applying it now.")
    assert questions == [f"Roll {ENDPOINT} back to release 1?"]
    snap(page, "14-rollback-applying")
    wait_until_live(page)
    expect(history).to_have_count(4)
    expect(history.first.locator("td").nth(0)).to_have_text("4")
    expect(history.first.locator("td").nth(1)).to_contain_text("Rollback (restores 1)")
    expect(history.first.locator(".badge")).to_have_text("current")
    rows = page.locator("form.traffic-form tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.locator("td:first-child code")).to_have_text(f"{MODEL}:1")
    expect(rows.locator("input.traffic-weight")).to_have_value("100")
    snap(page, "15-rolled-back")

    answered = Counter(infer(journey["url"])[0] for _ in range(20))
    journey["requests"] += 20
    assert answered == {f"{MODEL}:1": 20}


def test_find_the_actions_in_the_audit_log(page, journey):
    login(page, journey["credentials"])
    page.click("nav >> text=Audit")
    expect(page.locator("h1")).to_have_text("Audit log")
    page.fill("input[name=action]", "endpoint.")
    # Other journeys share this stack: only this journey's endpoint.
    page.fill("input[name=q]", ENDPOINT)
    page.click("button:has-text('Filter')")
    rows = page.locator("table tbody tr")
    expect(rows.locator("td:nth-child(3)")).to_have_text(
        ["endpoint.rollback", "endpoint.traffic", "endpoint.deploy", "endpoint.create"]
    )
    expect(rows.locator("td:nth-child(2)")).to_have_text(["erin"] * 4)
    expect(rows.locator("td:nth-child(4)")).to_contain_text([ENDPOINT] * 4)
    expect(rows.locator("td:nth-child(6)")).to_have_text(["127.0.0.1"] * 4)
    snap(page, "16-audit-endpoint-actions")

    page.fill("input[name=action]", "")
    page.fill("input[name=q]", MODEL)
    page.click("button:has-text('Filter')")
    actions = rows.locator("td:nth-child(3)")
    for action in ("model.create", "version.register", "alias.set"):
        expect(actions.filter(has_text=re.compile(f"^{re.escape(action)}$"))).not_to_have_count(0)
    snap(page, "17-audit-model-actions")
