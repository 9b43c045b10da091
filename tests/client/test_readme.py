"""The README's "Use it from CI" commands, run exactly as written against a live stack, and the
claim that the client installs on its own (no Django)."""

from __future__ import annotations

import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.client.conftest import TEAM, write_classifier
from tests.e2e.stack import ROOT

pytestmark = pytest.mark.slow


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def shell_commands(section: str) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    return [line for line in blocks[0].splitlines() if line.strip()]


def test_use_it_from_ci_commands_run_as_written(live, tmp_path):
    commands = shell_commands(readme_section("Use it from CI"))
    assert commands[0] == "modeldeck models create churn"
    live.stack.manage("ensure_local_target", TEAM)  # the README's `--target local`
    files = write_classifier(tmp_path)
    assert (tmp_path / "model.onnx").exists() and (tmp_path / "reference.csv").exists()

    environment = live.env(PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin")
    for command in commands:
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"

    from modeldeck_client import Client

    with Client(live.url, live.token) as client:
        endpoint = client.endpoint_get("churn-api")
        assert endpoint.status == "live"
        assert [(v["version"], v["weight"]) for v in endpoint.traffic] == [("churn:2", 100)]
        assert client.version_get("churn", 1).approval == "approved"
    config = (tmp_path / "model_repository" / "churn" / "config.pbtxt").read_text()
    assert 'name: "churn"' in config
    assert (tmp_path / "model_repository/churn/1/model.onnx").read_bytes() == (
        files["onnx"].read_bytes()
    )


def test_the_client_installs_on_its_own_without_django(tmp_path):
    """`pip install ./client` (the README's command) into a fresh environment."""
    section = readme_section("Use it from CI")
    assert "`pip install ./client`" in section
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "./client"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr
    help_text = subprocess.run(
        [str(environment / "bin" / "modeldeck"), "--help"], capture_output=True, text=True
    )
    assert help_text.returncode == 0
    for command in ("versions", "deploy", "rollback", "import", "export"):
        assert command in help_text.stdout
    django = subprocess.run([str(python), "-c", "import django"], capture_output=True)
    assert django.returncode == 1
