"""`python manage.py seed_demo`: a team `demo` with three small, validated models.

Needs only onnx, onnxruntime and numpy (scikit-learn is a dev dependency): one model ships with
onnxruntime, the others are built with the onnx helper API and fit with numpy. Running it again
changes nothing.
"""

from __future__ import annotations

import csv
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from django.core.management.base import BaseCommand
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.datasets import get_example

from accounts.actor import Actor
from accounts.models import Team
from registry import services, tasks
from registry.models import ModelVersion, RegisteredModel, VersionStatus
from registry.uploads import HashedUpload

TEAM = "demo"
OPSET = 17


@dataclass
class DemoVersion:
    """One version to register: the file, what is known about it, and how to review it."""

    path: Path
    metrics: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    reference: Path | None = None
    approve: bool = False


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _house_data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = np.column_stack(
        [
            rng.uniform(30, 250, rows),  # area in m²
            rng.integers(1, 7, rows),  # rooms
            rng.uniform(0, 40, rows),  # distance to the centre in km
        ]
    )
    price = 2.1 * features[:, 0] + 9.5 * features[:, 1] - 3.2 * features[:, 2] + 80
    return features, price + rng.normal(0, 15, rows)


def linear_regressor(folder: Path, *, rows: int, seed: int) -> tuple[Path, dict]:
    """House prices (thousands) from area, rooms and distance, fit by least squares."""
    features, price = _house_data(rows, seed)
    design = np.column_stack([features, np.ones(rows)])
    solution, *_ = np.linalg.lstsq(design, price, rcond=None)
    rmse = float(np.sqrt(np.mean((design @ solution - price) ** 2)))
    weights = solution[:3].reshape(3, 1).astype(np.float32)
    bias = solution[3:].astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "weights"], ["product"]),
            helper.make_node("Add", ["product", "bias"], ["price"]),
        ],
        "house_prices",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("price", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="modeldeck-seed-demo"
    )
    path = _save(model, folder / f"house-prices-{rows}.onnx")
    return path, {"rmse": round(rmse, 4), "training_rows": rows}


def house_reference_csv(folder: Path) -> Path:
    """Sample inputs of the house-price model, one CSV column per input column."""
    features, _price = _house_data(300, seed=7)
    path = folder / "house-prices-reference.csv"
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["area_m2", "rooms", "distance_km"])
        writer.writerows([[f"{a:.1f}", int(r), f"{d:.2f}"] for a, r, d in features])
    return path


def mlp_classifier(folder: Path) -> tuple[Path, dict]:
    """Churn (yes/no) from four usage features: a 4-8-2 MLP trained with numpy."""
    rng = np.random.default_rng(3)
    features = rng.normal(size=(600, 4)).astype(np.float32)
    labels = (features[:, 0] - features[:, 1] + 0.5 * features[:, 2] * features[:, 3]) > 0
    targets = np.eye(2, dtype=np.float32)[labels.astype(int)]
    w1 = rng.normal(0, 0.5, (4, 8)).astype(np.float32)
    b1 = np.zeros(8, np.float32)
    w2 = rng.normal(0, 0.5, (8, 2)).astype(np.float32)
    b2 = np.zeros(2, np.float32)
    for _ in range(400):  # plain full-batch gradient descent on cross-entropy
        hidden = np.maximum(features @ w1 + b1, 0)
        logits = hidden @ w2 + b2
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        grad_logits = (probabilities - targets) / len(features)
        grad_hidden = (grad_logits @ w2.T) * (hidden > 0)
        w2 -= 0.5 * hidden.T @ grad_logits
        b2 -= 0.5 * grad_logits.sum(axis=0)
        w1 -= 0.5 * features.T @ grad_hidden
        b1 -= 0.5 * grad_hidden.sum(axis=0)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["usage", "w1", "b1"], ["hidden_linear"]),
            helper.make_node("Relu", ["hidden_linear"], ["hidden"]),
            helper.make_node("Gemm", ["hidden", "w2", "b2"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["churn"], axis=1, keepdims=0),
        ],
        "churn_mlp",
        [helper.make_tensor_value_info("usage", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("churn", TensorProto.INT64, ["batch"]),
        ],
        [
            numpy_helper.from_array(array, name)
            for name, array in {"w1": w1, "b1": b1, "w2": w2, "b2": b2}.items()
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="modeldeck-seed-demo"
    )
    path = _save(model, folder / "churn-mlp.onnx")
    return path, {"train_accuracy": round(accuracy, 4)}


class Command(BaseCommand):
    help = "Create team 'demo' with three small validated models (safe to run again)."

    def handle(self, *args, **options):
        actor = Actor.system("seed_demo")
        team, created = Team.objects.get_or_create(name=TEAM, defaults={"display_name": "Demo"})
        if created:
            self.stdout.write(f"Created team {TEAM}.")
        with tempfile.TemporaryDirectory(prefix="modeldeck-demo-") as folder:
            for name, description, tags, versions, alias in self._catalogue(Path(folder)):
                if RegisteredModel.objects.filter(name=name).exists():
                    self.stdout.write(f"Model {name} exists; left as it is.")
                    continue
                model = services.model_create(
                    actor=actor, team=team, name=name, description=description, tags=tags
                )
                for spec in versions:
                    version = self._register(actor, model, spec)
                    self.stdout.write(
                        f"  {version.reference}: {version.status} {version.status_reason}".rstrip()
                    )
                if alias:
                    approved = model.versions.filter(approval="approved").order_by("-number")
                    if approved.exists():
                        services.alias_set(
                            actor=actor,
                            model=model,
                            name=alias,
                            version_number=approved.first().number,
                            reason="Demo data",
                            protected=True,
                        )
                self.stdout.write(self.style.SUCCESS(f"Model {name} ready."))
        self.stdout.write(f"Add yourself: python manage.py addmember USERNAME {TEAM} scientist")

    def _catalogue(self, folder: Path):
        """(name, description, tags, versions, protected alias) of each demo model."""
        first, first_metrics = linear_regressor(folder, rows=60, seed=1)
        second, second_metrics = linear_regressor(folder, rows=2_000, seed=2)
        churn, churn_metrics = mlp_classifier(folder)
        reference = house_reference_csv(folder)
        return [
            (
                "iris-logreg",
                "Logistic regression on the iris flowers (onnxruntime's example).",
                {"task": "classification", "dataset": "iris"},
                [DemoVersion(Path(get_example("logreg_iris.onnx")), approve=True)],
                None,
            ),
            (
                "house-prices",
                "House price (thousands) from area, rooms and distance.",
                {"task": "regression", "team": "pricing"},
                [
                    DemoVersion(first, first_metrics, {"solver": "lstsq"}, reference, approve=True),
                    DemoVersion(
                        second, second_metrics, {"solver": "lstsq"}, reference, approve=True
                    ),
                ],
                "production",
            ),
            (
                "churn-mlp",
                "Churn from four usage features; a small MLP trained with numpy.",
                {"task": "classification", "team": "growth"},
                [DemoVersion(churn, churn_metrics, {"hidden": 8, "epochs": 400})],
                None,
            ),
        ]

    def _register(self, actor: Actor, model: RegisteredModel, spec: DemoVersion) -> ModelVersion:
        upload = HashedUpload.from_path(spec.path)
        reference = HashedUpload.from_path(spec.reference) if spec.reference else None
        version = services.version_register(
            actor=actor,
            model=model,
            file=upload,
            reference=reference,
            metrics=spec.metrics,
            params=spec.params,
        )
        # The same in-process path the Celery task runs, so the demo is ready at once.
        tasks.validate_version(version.pk)
        version.refresh_from_db()
        if spec.approve and version.status == VersionStatus.READY:
            version = services.version_approve(
                actor=actor, version=version, decision="approved", comment="Demo data"
            )
        return version
