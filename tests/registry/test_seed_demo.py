"""`seed_demo`: three validated demo models, built without scikit-learn; a rerun changes nothing."""

import pytest
from django.core.management import call_command

from accounts.models import AuditEvent
from registry.models import Alias, AliasEvent, ModelVersion, RegisteredModel
from tests.registry.conftest import stored_files

pytestmark = pytest.mark.django_db


def state():
    return (
        list(RegisteredModel.objects.order_by("name").values_list("name", "team__name")),
        list(
            ModelVersion.objects.order_by("model__name", "number").values_list(
                "model__name", "number", "status", "approval"
            )
        ),
        list(Alias.objects.values_list("model__name", "name", "version__number", "is_protected")),
        AliasEvent.objects.count(),
        AuditEvent.objects.count(),
        stored_files(),
    )


def test_seed_demo_creates_validated_models_and_is_idempotent(capsys):
    call_command("seed_demo")
    first = state()
    assert first[0] == [("churn-mlp", "demo"), ("house-prices", "demo"), ("iris-logreg", "demo")]
    assert first[1] == [
        ("churn-mlp", 1, "ready", "pending"),
        ("house-prices", 1, "ready", "approved"),
        ("house-prices", 2, "ready", "approved"),
        ("iris-logreg", 1, "ready", "approved"),
    ]
    assert first[2] == [("house-prices", "production", 2, True)]
    churn = ModelVersion.objects.get(model__name="churn-mlp")
    assert churn.signature == {
        "inputs": [{"name": "usage", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "churn", "datatype": "INT64", "shape": [-1]},
        ],
    }
    assert churn.metrics["train_accuracy"] > 0.8
    profile = ModelVersion.objects.get(model__name="house-prices", number=2).reference_profile
    assert profile["rows"] == 300
    assert [f["name"] for f in profile["features"]] == ["area_m2", "rooms", "distance_km"]
    capsys.readouterr()
    call_command("seed_demo")
    assert state() == first
    assert "Model house-prices exists; left as it is." in capsys.readouterr().out
