"""Fetch a registered MLflow model for upload: the ONNX flavor as it is, scikit-learn, XGBoost and
LightGBM flavors converted (and parity-checked) on this machine. The run id, source and model
URI become the version's lineage. Needs the `mlflow` and `convert` extras."""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeldeck_client import convert

MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
CONVERTED_FLAVORS = ("sklearn", "xgboost", "lightgbm")
MAX_METRICS = 200


class ImportFailed(Exception):
    """The model cannot be fetched or brought into ONNX form."""


@dataclass
class Imported:
    name: str
    onnx_path: Path
    model_uri: str
    source: str
    git_commit: str
    params: dict[str, Any]
    metrics: dict[str, float]
    report: convert.ParityReport | None


def _mlflow():
    try:
        import mlflow
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ImportFailed(
            "MLflow import needs the mlflow extra: pip install 'modeldeck-client[mlflow,convert]'."
        ) from None
    return mlflow, MlflowClient


def _model_version(client, model_uri: str):
    match = MODEL_URI.match(model_uri)
    if match is None:
        raise ImportFailed(f"{model_uri!r} is not models:/NAME@ALIAS or models:/NAME/VERSION.")
    name = match["name"]
    if match["alias"]:
        return client.get_model_version_by_alias(name, match["alias"])
    return client.get_model_version(name, match["version"])


def _flavors(folder: Path) -> dict[str, Any]:
    import yaml

    document = yaml.safe_load((folder / "MLmodel").read_text(encoding="utf-8"))
    return document.get("flavors", {}) if isinstance(document, dict) else {}


def fetch(
    model_uri: str,
    *,
    tracking_uri: str,
    sample_path: Path | None = None,
    absolute_tolerance: float = convert.DEFAULT_ABSOLUTE_TOLERANCE,
    relative_tolerance: float = convert.DEFAULT_RELATIVE_TOLERANCE,
    workdir: Path | None = None,
) -> Imported:
    """Download the model version `model_uri` names and return an ONNX file with its lineage."""
    mlflow, MlflowClient = _mlflow()
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        model_version = _model_version(client, model_uri)
    except mlflow.exceptions.MlflowException as error:
        raise ImportFailed(f"MLflow has no {model_uri}: {error.message}") from None
    resolved_uri = f"models:/{model_version.name}/{model_version.version}"
    folder = Path(workdir or tempfile.mkdtemp(prefix="modeldeck-mlflow-"))
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=resolved_uri, dst_path=str(folder), tracking_uri=tracking_uri
        )
    )
    flavors = _flavors(local)
    report = None
    params: dict[str, Any] = {}
    if "onnx" in flavors:
        onnx_path = local / flavors["onnx"].get("data", "model.onnx")
        if not onnx_path.resolve().is_relative_to(local.resolve()):
            raise ImportFailed("The MLmodel file points outside the model folder.")
        params["conversion_framework"] = "onnx (MLflow flavor)"
    else:
        flavor = next((f for f in CONVERTED_FLAVORS if f in flavors), None)
        if flavor is None:
            raise ImportFailed(
                f"{model_uri} has the flavors {', '.join(sorted(flavors)) or 'none'}; Modeldeck "
                "imports onnx, sklearn, xgboost and lightgbm (export others to ONNX: docs/)."
            )
        if sample_path is None:
            raise ImportFailed(f"The {flavor} flavor is converted: give --sample CSV to check it.")
        # The flavor's own loader: it unpickles, here on the user's machine, never the server.
        model = getattr(mlflow, flavor).load_model(str(local))
        conversion = convert.convert_model(
            model,
            framework=flavor,
            sample=convert.read_sample(sample_path),
            name=model_version.name,
            absolute_tolerance=absolute_tolerance,
            relative_tolerance=relative_tolerance,
            workdir=folder,
        )
        onnx_path, report, params = conversion.onnx_path, conversion.report, conversion.params
    run = client.get_run(model_version.run_id) if model_version.run_id else None
    params.update(
        {
            "mlflow_model_uri": model_uri,
            "mlflow_model_version": f"{model_version.name}/{model_version.version}",
            "mlflow_run_id": model_version.run_id or "",
            "mlflow_source": model_version.source or "",
        }
    )
    metrics = {}
    if run is not None:
        for key, value in list(run.data.metrics.items())[:MAX_METRICS]:
            if isinstance(value, int | float) and math.isfinite(value):
                metrics[key] = float(value)
    # The version's source link opens the model version in the MLflow UI (http(s) only).
    source = ""
    if tracking_uri.startswith(("http://", "https://")):
        source = (
            f"{tracking_uri.rstrip('/')}/#/models/{model_version.name}"
            f"/versions/{model_version.version}"
        )
    git_commit = (run.data.tags.get("mlflow.source.git.commit", "") if run else "")[:64]
    return Imported(
        name=model_version.name,
        onnx_path=onnx_path,
        model_uri=resolved_uri,
        source=source,
        git_commit=git_commit,
        params={key: value for key, value in params.items() if value != ""},
        metrics=metrics,
        report=report,
    )
