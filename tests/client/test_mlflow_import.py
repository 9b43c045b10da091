"""`modeldeck import mlflow` against a real `mlflow server` (SQLite backend, artifacts served
from a temporary folder), with models logged and registered by the real MLflow client."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.client.conftest import free_port_in

pytestmark = pytest.mark.slow
mlflow = pytest.importorskip("mlflow")

BIN = Path(sys.executable).parent
RNG = np.random.default_rng(3)
X = RNG.normal(size=(300, 4)).astype(np.float32)
Y = (X[:, 0] - X[:, 2] > 0).astype(np.int64)


@pytest.fixture(scope="module")
def mlflow_server(live, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow")
    port = live.mlflow_port or free_port_in(range(20000, 32000))
    log = (folder / "server.log").open("wb")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    argv = [
        str(BIN / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", str(folder / "artifacts"),
        "--serve-artifacts",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    process = subprocess.Popen(
        argv,
        cwd=folder,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("mlflow server did not start:\n" + (folder / "server.log").read_text())
        time.sleep(0.5)
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    log.close()


@pytest.fixture(scope="module")
def registered(mlflow_server):
    """An sklearn flavor (alias champion) and an ONNX flavor, logged by the MLflow client."""
    import mlflow.onnx
    import mlflow.sklearn
    from mlflow.tracking import MlflowClient
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("kit-import")
    client = MlflowClient(tracking_uri=mlflow_server)
    model = LogisticRegression().fit(X, Y)
    with mlflow.start_run(run_name="sklearn") as sklearn_run:
        mlflow.log_param("C", 1.0)
        mlflow.log_metric("auc", 0.93)
        mlflow.set_tag("mlflow.source.git.commit", "0123456789abcdef0123456789abcdef01234567")
        mlflow.sklearn.log_model(
            model, name="model", registered_model_name="kit-fraud", pip_requirements=[]
        )
    client.set_registered_model_alias("kit-fraud", "champion", "1")

    onnx_model = to_onnx(model, X[:1], options={id(model): {"zipmap": False}})
    with mlflow.start_run(run_name="onnx") as onnx_run:
        mlflow.onnx.log_model(
            onnx_model, name="model", registered_model_name="kit-onnx", pip_requirements=[]
        )
    return {
        "sklearn_run": sklearn_run.info.run_id,
        "onnx_run": onnx_run.info.run_id,
        "sklearn_version": client.get_model_version("kit-fraud", "1"),
        "onnx_version": client.get_model_version("kit-onnx", "1"),
        "onnx_bytes": onnx_model.SerializeToString(),
        "model": model,
    }


def _sample(folder: Path) -> Path:
    path = folder / "sample.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "c", "d"])
        writer.writerows(X[:80].tolist())
    return path


def test_sklearn_flavor_is_converted_and_keeps_its_lineage(
    live, mlflow_server, registered, tmp_path
):
    result = live.cli(
        "--json", "import", "mlflow", "--tracking-uri", mlflow_server,
        "models:/kit-fraud@champion", "--sample", str(_sample(tmp_path)), "--wait",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "created model kit-fraud" in result.stderr
    assert "parity check passed: 80 rows, probabilities, label" in result.stderr
    version = json.loads(result.stdout)
    assert (version["model"], version["number"], version["status"]) == ("kit-fraud", 1, "ready")
    assert version["source"] == f"{mlflow_server}/#/models/kit-fraud/versions/1"
    assert version["data_reference"] == "models:/kit-fraud/1"
    assert version["git_commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert version["metrics"] == {"auc": 0.93}
    params = version["params"]
    assert params["mlflow_run_id"] == registered["sklearn_run"]
    assert params["mlflow_source"] == registered["sklearn_version"].source
    assert params["mlflow_model_uri"] == "models:/kit-fraud@champion"
    assert params["mlflow_model_version"] == "kit-fraud/1"
    assert params["conversion_framework"] == "sklearn"
    assert params["conversion_parity_passed"] is True


def test_onnx_flavor_is_uploaded_as_it_is(live, mlflow_server, registered):
    result = live.cli(
        "--json", "import", "mlflow", "--tracking-uri", mlflow_server, "models:/kit-onnx/1",
        "--model", "kit-from-mlflow", "--wait",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    version = json.loads(result.stdout)
    assert version["status"] == "ready"
    assert version["sha256"] == hashlib.sha256(registered["onnx_bytes"]).hexdigest()
    assert version["params"]["mlflow_run_id"] == registered["onnx_run"]
    assert version["params"]["conversion_framework"] == "onnx (MLflow flavor)"
    assert "parity check" not in result.stderr


def test_unknown_models_and_missing_samples_upload_nothing(live, mlflow_server, registered):
    unknown = live.cli(
        "import", "mlflow", "--tracking-uri", mlflow_server, "models:/kit-fraud@nobody"
    )
    assert unknown.returncode == 1
    assert "not uploaded: MLflow has no models:/kit-fraud@nobody" in unknown.stderr

    no_sample = live.cli(
        "import", "mlflow", "--tracking-uri", mlflow_server, "models:/kit-fraud/1",
        "--model", "kit-unsampled",
    )  # fmt: skip
    assert no_sample.returncode == 1
    assert "give --sample CSV" in no_sample.stderr
    gone = live.cli("models", "show", "kit-unsampled")
    assert gone.returncode == 3 and "404" in gone.stderr

    malformed = live.cli("import", "mlflow", "--tracking-uri", mlflow_server, "runs:/abc/model")
    assert malformed.returncode == 1
    assert "is not models:/NAME@ALIAS or models:/NAME/VERSION" in malformed.stderr
