"""The `modeldeck` CLI against a live stack: real processes, real uploads, real exit codes."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import httpx
import onnx
import pytest
from onnx import TensorProto, helper

from tests.client.conftest import write_classifier

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    return write_classifier(tmp_path_factory.mktemp("files"))


@pytest.fixture(scope="module")
def churn(live, files) -> str:
    """kit-churn with a ready version 1, whichever test runs first."""
    from modeldeck_client import Client

    with Client(live.url, live.token) as client:
        client.model_create("kit-churn")
        version = client.version_push(
            "kit-churn", files["onnx"], reference=files["reference"], metrics={"auc": 0.91}
        )
        assert client.version_wait("kit-churn", version.number, timeout=120).status == "ready"
    return "kit-churn"


@pytest.fixture(scope="module")
def api(live, churn, tmp_path_factory) -> str:
    """kit-churn version 2 registered, and the endpoint kit-api serving version 1 on the local
    target, created with the CLI."""
    from modeldeck_client import Client

    second = write_classifier(tmp_path_factory.mktemp("v2"), seed=1)
    with Client(live.url, live.token) as client:
        version = client.version_push("kit-churn", second["onnx"])
        assert client.version_wait("kit-churn", version.number, timeout=120).status == "ready"
    created = live.cli(
        "endpoints", "create", "kit-api", "--target", "kit-local", "--version", "kit-churn:1",
        "--wait", "--timeout", "180",
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    assert "kit-api: release 1 live" in created.stdout
    return "kit-api"


def _unloadable_onnx(path: Path) -> Path:
    """A well-formed ONNX file whose only node is an operator no runtime implements: the upload
    is accepted (it is ONNX) and validation turns it invalid."""
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example.nowhere")
    graph = helper.make_graph(
        [node],
        "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example.nowhere", 1)],
    )
    path.write_bytes(model.SerializeToString())
    return path


def test_push_waits_for_validation_and_reports_the_signature(live, files):
    created = live.cli_json(
        "models", "create", "kit-push", "--description", "from CI", "--tag", "stage=ci"
    )
    assert (created["name"], created["team"], created["tags"]) == (
        "kit-push",
        "kit-ci",
        {"stage": "ci"},
    )

    result = live.cli(
        "versions",
        "push",
        str(files["onnx"]),
        "--model",
        "kit-push",
        "--reference",
        str(files["reference"]),
        "--metrics",
        '{"auc": 0.91}',
        "--wait",
    )
    assert result.returncode == 0, result.stderr
    assert "kit-push:1: ready" in result.stdout
    assert "input X: FP32 [-1, 4]" in result.stdout
    # The progress bar goes to stderr and reaches 100 % of the multipart body.
    assert "uploading model.onnx: 100%" in result.stderr

    shown = live.cli_json("versions", "show", "kit-push", "1")
    assert (shown["status"], shown["metrics"], shown["has_reference_profile"]) == (
        "ready",
        {"auc": 0.91},
        True,
    )
    assert shown["size"] == files["onnx"].stat().st_size
    listed = live.cli_json("versions", "list", "kit-push")
    assert [v["number"] for v in listed] == [1]


def test_push_exits_nonzero_with_the_reason_when_the_version_ends_invalid(live, tmp_path):
    live.cli_json("models", "create", "kit-broken")
    broken = _unloadable_onnx(tmp_path / "broken.onnx")
    result = live.cli("versions", "push", str(broken), "--model", "kit-broken", "--wait")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "kit-broken:1 is invalid:" in result.stderr
    assert "com.example.nowhere" in result.stderr
    version = live.cli_json("versions", "show", "kit-broken", "1")
    assert version["status"] == "invalid"


def test_refusals_exit_3_with_the_servers_message(live, tmp_path):
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("definitely not a model")
    live.cli_json("models", "create", "kit-refused")
    result = live.cli("versions", "push", str(not_onnx), "--model", "kit-refused")
    assert result.returncode == 3
    assert "the server refused: 400" in result.stderr
    assert live.cli_json("versions", "list", "kit-refused") == []

    # Another team's model does not exist for this token.
    result = live.cli("versions", "show", "kit-refused", "1", token=live.other_token)
    assert result.returncode == 3
    assert "404" in result.stderr

    bad_token = live.cli("models", "show", "kit-refused", token="md_not-a-token")
    assert bad_token.returncode == 3
    assert "401" in bad_token.stderr


def test_missing_configuration_is_a_usage_error(live):
    import subprocess

    from tests.client.conftest import MODELDECK

    env = {k: v for k, v in live.env().items() if k not in {"MODELDECK_URL", "MODELDECK_TOKEN"}}
    result = subprocess.run(
        [MODELDECK, "models", "show", "x"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "Set MODELDECK_URL" in result.stderr


def test_profile_file_configures_the_client(live, churn, tmp_path):
    import subprocess

    from tests.client.conftest import MODELDECK

    config = tmp_path / "config.toml"
    config.write_text(f'[profiles.ci]\nurl = "{live.url}"\ntoken = "{live.token}"\n')
    config.chmod(0o600)
    env = {k: v for k, v in live.env().items() if k not in {"MODELDECK_URL", "MODELDECK_TOKEN"}}
    env["MODELDECK_CONFIG"] = str(config)
    result = subprocess.run(
        [MODELDECK, "--profile", "ci", "--json", "models", "show", churn],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["name"] == churn
    assert "readable by other users" not in result.stderr


def test_alias_approve_deploy_canary_promote_and_rollback(live, api):
    alias = live.cli_json("alias", "set", "kit-churn", "candidate", "2")
    assert (alias["name"], alias["version"]) == ("candidate", 2)
    approved = live.cli_json("approve", "kit-churn", "2", "--comment", "offline metrics ok")
    assert approved["approval"] == "approved"

    canary = live.cli_json(
        "deploy", "kit-api", "kit-churn@candidate", "--weight", "20", "--wait", "--timeout", "180"
    )
    assert (canary["live"], canary["release"]) == (True, 2)
    assert sorted((v["version"], v["weight"]) for v in canary["endpoint"]["traffic"]) == [
        ("kit-churn:1", 80),
        ("kit-churn:2", 20),
    ]
    endpoint = live.cli_json("endpoints", "show", "kit-api")
    response = httpx.post(
        f"{endpoint['url']}/v2/models/kit-api/infer",
        json={"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]}]},
        timeout=30,
    )
    assert response.status_code == 200, response.text

    traffic = live.cli_json(
        "traffic", "kit-api", "kit-churn:1=50", "kit-churn:2=50", "--wait", "--timeout", "180"
    )
    assert traffic["live"] is True
    promoted = live.cli_json("promote", "kit-api", "--wait", "--timeout", "180")
    assert promoted["live"] is True
    assert [(v["version"], v["weight"]) for v in promoted["endpoint"]["traffic"]] == [
        ("kit-churn:2", 100)
    ]
    rolled_back = live.cli_json("rollback", "kit-api", "--wait", "--timeout", "180")
    assert rolled_back["live"] is True
    assert rolled_back["release"] == promoted["release"] + 1
    assert sorted((v["version"], v["weight"]) for v in rolled_back["endpoint"]["traffic"]) == [
        ("kit-churn:1", 50),
        ("kit-churn:2", 50),
    ]
    back_to_first = live.cli("rollback", "kit-api", "--to", "1", "--wait", "--timeout", "180")
    assert back_to_first.returncode == 0, back_to_first.stderr
    assert f"kit-api: release {rolled_back['release'] + 1} live" in back_to_first.stdout


def test_a_deploy_that_fails_exits_1_and_prints_the_deployment_events(live, api, tmp_path):
    """The candidate's stored file disappears from the artifact storage (a lost disk) after it
    validated: the reconciler cannot start it, the release fails while the old one serves."""
    third = write_classifier(tmp_path / "v3", seed=2)
    pushed = live.cli_json("versions", "push", str(third["onnx"]), "--model", "kit-churn", "--wait")
    stored = [
        path
        for path in (live.stack.var_dir / "artifacts").rglob("*")
        if path.is_file()
        and path.stat().st_size == pushed["size"]
        and _sha256(path) == pushed["sha256"]
    ]
    assert len(stored) == 1
    stored[0].unlink()

    result = live.cli(
        "deploy", "kit-api", f"kit-churn:{pushed['number']}", "--weight", "10", "--wait",
        "--timeout", "180",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    release = int(result.stdout.split("release ")[1].split()[0])
    assert f"kit-api: release {release} did not go live" in result.stderr
    # The events that explain it follow the outcome on stdout.
    assert f"error   Release {release} failed (release" in result.stdout
    assert f"Could not lay out kit-churn:{pushed['number']}" in result.stdout

    recovered = live.cli("rollback", "kit-api", "--wait", "--timeout", "180")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    endpoint = live.cli_json("endpoints", "show", "kit-api")
    assert endpoint["status"] == "live"
    assert [v["version"] for v in endpoint["traffic"]] == ["kit-churn:1"]


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_batch_run_waits_and_writes_the_result(live, churn, files, tmp_path):
    scoring = tmp_path / "score.csv"
    with scoring.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "f0", "f1", "f2", "f3"])
        for index, row in enumerate(files["x"][:25].tolist()):
            writer.writerow([f"row-{index}", *row])
    out = tmp_path / "result.csv"
    result = live.cli("batch", "run", "kit-churn:1", str(scoring), "--wait", "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [row["id"] for row in rows] == [f"row-{i}" for i in range(25)]
    expected = files["model"].predict(files["x"][:25])
    label_column = next(name for name in rows[0] if name.startswith("label"))
    assert [int(float(row[label_column])) for row in rows] == expected.tolist()


def test_feedback_send_reports_what_the_server_stored(live, api, tmp_path):
    feedback = tmp_path / "labels.csv"
    feedback.write_text("request_id,label\nnever-served-1,1\nnever-served-2,0\n")
    answer = live.cli_json("feedback", "send", "kit-api", str(feedback))
    assert answer["unknown"] == ["never-served-1", "never-served-2"]
    assert answer.get("stored", 0) == 0


def test_experiments_create_start_show(live, api):
    created = live.cli_json(
        "experiments", "create", "--endpoint", "kit-api", "--name", "v2 vs v1",
        "--control", "kit-churn:1", "--treatment", "kit-churn:2", "--metric", "error_rate",
        "--minimum-effect", "0.05", "--treatment-percent", "30",
    )  # fmt: skip
    assert (created["status"], created["control"], created["treatment"]) == (
        "draft",
        "kit-churn:1",
        "kit-churn:2",
    )
    started = live.cli_json("experiments", "start", str(created["id"]))
    assert started["status"] == "running"
    shown = live.cli_json("experiments", "show", str(created["id"]))
    assert (shown["id"], shown["status"], shown["treatment_percent"]) == (
        created["id"],
        "running",
        30,
    )


def test_export_triton_writes_the_repository(live, churn, tmp_path):
    folder = tmp_path / "repository"
    result = live.cli("export", "triton", "kit-churn", "1", "--extract", str(folder))
    assert result.returncode == 0, result.stderr
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "kit-churn/1/model.onnx",
        "kit-churn/config.pbtxt",
    ]
    onnx.checker.check_model(str(folder / "kit-churn/1/model.onnx"))
    archive = tmp_path / "triton.zip"
    zipped = live.cli("export", "triton", "kit-churn", "1", "--out", str(archive))
    assert zipped.returncode == 0, zipped.stderr
    with zipfile.ZipFile(archive) as bundle:
        assert (
            bundle.read("kit-churn/config.pbtxt")
            == (folder / "kit-churn/config.pbtxt").read_bytes()
        )
