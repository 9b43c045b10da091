"""docs/: every path of the REST contract exists in the OpenAPI schema, and the CI examples'
`modeldeck` commands do what they say against a live stack (a failed canary is rolled back)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.client.conftest import write_classifier
from tests.e2e.stack import ROOT

DOCS = ROOT / "docs"


def _normalized(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path.split("?")[0])


def test_every_documented_path_is_in_the_schema(db, scientist, team):
    from tests.conftest import token_client

    schema = token_client(scientist, team).get("/api/schema/?format=json").json()
    served = {_normalized(path) for path in schema["paths"]}
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    documented = {
        _normalized(path) for path in re.findall(r"^\| [A-Z, ]+ \| `(/api/v1/[^`]+)`", text, re.M)
    }
    assert len(documented) >= 50
    assert documented - served == set()
    # The README points at the contract in the repository, not outside it.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "../shared/" not in readme
    assert "(docs/api.md)" in readme


def _run_script(lines: list[str], *, cwd: Path, env: dict[str, str]) -> list[tuple[str, int, str]]:
    """Run each line with bash; returns (line, exit status, output)."""
    results = []
    for line in lines:
        completed = subprocess.run(
            ["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
        )
        results.append((line, completed.returncode, completed.stdout + completed.stderr))
    return results


@pytest.fixture
def workspace(live, tmp_path):
    """What `python train.py` leaves in the examples: model.pkl, sample.csv, reference.csv."""
    import joblib

    files = write_classifier(tmp_path)
    joblib.dump(files["model"], tmp_path / "model.pkl")
    (tmp_path / "sample.csv").write_text((tmp_path / "reference.csv").read_text())
    return tmp_path


def _environment(live, **variables: str) -> dict[str, str]:
    return live.env(PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin", **variables)


@pytest.mark.slow
def test_gitlab_example_registers_and_rolls_back_a_failed_canary(live, workspace):
    pipeline = yaml.safe_load((DOCS / "ci" / "gitlab-ci.yml").read_text())
    assert pipeline["stages"] == ["register", "canary", "promote"]
    env = _environment(
        live,
        **pipeline["variables"] | {"MODEL": "kit-gl", "ENDPOINT": "kit-gl-api"},
        CI_COMMIT_SHA="4f2c1b0e9d8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e",
        CI_PIPELINE_URL="https://gitlab.example.com/group/project/-/pipelines/42",
    )
    register = [line for line in pipeline["register"]["script"] if "modeldeck" in line]
    from modeldeck_client import Client

    with Client(live.url, live.token) as client:  # once, before the first pipeline
        client.model_create("kit-gl")
    assert [code for _, code, _ in _run_script(register, cwd=workspace, env=env)] == [0]
    from modeldeck_client import Client

    with Client(live.url, live.token) as client:
        first = client.version_get("kit-gl", 1)
        assert first.status == "ready"
        assert first.params["conversion_framework"] == "sklearn"
        assert first.git_commit == env["CI_COMMIT_SHA"]
        assert first.source == env["CI_PIPELINE_URL"]
        client.endpoint_create("kit-gl-api", target="kit-local", version="kit-gl:1")
        assert client.release_wait("kit-gl-api", 1, timeout=180).live

    # A second version whose stored file is lost after validation: the canary fails.
    second = _run_script(register, cwd=workspace, env=env)
    assert second[0][1] == 0, second[0][2]
    with Client(live.url, live.token) as client:
        version = client.version_get("kit-gl", 2)
    for path in (live.stack.var_dir / "artifacts").rglob("*.onnx"):
        if path.stat().st_size == version.size and _sha256(path) == version.sha256:
            path.unlink()
    canary = _run_script(pipeline["canary"]["script"], cwd=workspace, env=env)
    _line, code, output = canary[0]
    assert code == 1, output
    assert "did not go live" in output
    assert "Could not lay out kit-gl:2" in output
    with Client(live.url, live.token) as client:
        endpoint = client.endpoint_get("kit-gl-api")
        assert endpoint.status == "live"
        assert [(v["version"], v["weight"]) for v in endpoint.traffic] == [("kit-gl:1", 100)]
        assert client.releases("kit-gl-api")[0].reason == "rollback"


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_github_example_canary_goes_live_and_is_promoted(live, workspace):
    workflow = yaml.safe_load((DOCS / "ci" / "github-actions.yml").read_text())
    job = workflow["jobs"]["ship"]
    env = _environment(
        live,
        MODEL="kit-gh",
        ENDPOINT="kit-gh-api",
        GITHUB_SHA="0123456789abcdef0123456789abcdef01234567",
        GITHUB_SERVER_URL="https://github.com",
        GITHUB_REPOSITORY="acme/churn",
        GITHUB_RUN_ID="7",
    )
    assert set(job["env"]) == {"MODELDECK_URL", "MODELDECK_TOKEN", "MODEL", "ENDPOINT"}
    steps = {step.get("name", ""): step for step in job["steps"]}
    from modeldeck_client import Client

    register = steps["Register and validate"]["run"]
    with Client(live.url, live.token) as client:  # once, before the first pipeline
        client.model_create("kit-gh")
    assert _run_script([register], cwd=workspace, env=env)[0][1] == 0
    with Client(live.url, live.token) as client:
        assert client.version_get("kit-gh", 1).source == (
            "https://github.com/acme/churn/actions/runs/7"
        )
        client.endpoint_create("kit-gh-api", target="kit-local", version="kit-gh:1")
        assert client.release_wait("kit-gh-api", 1, timeout=180).live
    assert _run_script([register], cwd=workspace, env=env)[0][1] == 0
    canary = _run_script([steps["Canary at 10 %"]["run"]], cwd=workspace, env=env)
    assert canary[0][1] == 0, canary[0][2]
    assert steps["Roll back on failure"]["if"] == "failure() && steps.canary.outcome == 'failure'"
    assert "modeldeck rollback" in steps["Roll back on failure"]["run"]
    promote = _run_script([steps["Promote"]["run"]], cwd=workspace, env=env)
    assert promote[0][1] == 0, promote[0][2]
    with Client(live.url, live.token) as client:
        endpoint = client.endpoint_get("kit-gh-api")
        assert [(v["version"], v["weight"]) for v in endpoint.traffic] == [("kit-gh:2", 100)]
