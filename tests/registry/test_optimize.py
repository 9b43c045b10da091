"""Optimize: a real MLP and a scikit-learn classifier become valid, smaller versions whose
outputs agree within the stated tolerance; an unquantizable model says why; roles and teams."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from registry import optimize, services, tasks
from registry.models import JobStatus, ModelVersion, Optimization, VersionStatus
from registry.storage import local_path
from tests.registry import onnx_files
from tests.registry.conftest import register, validated
from tests.registry.test_batch import scaled_mlp


def _run(path, feeds):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _optimized(actor, version, method="int8") -> tuple[Optimization, ModelVersion | None]:
    optimization = services.version_optimize(actor=actor, version=version, method=method)
    tasks.optimize_version(optimization.pk)
    optimization.refresh_from_db()
    result = validated(optimization.result) if optimization.result else None
    return optimization, result


def _file(version: ModelVersion):
    return local_path(version.model_artifact)


@pytest.fixture
def mlp_version(registered, scientist_actor, tmp_path):
    path = onnx_files.save(scaled_mlp(hidden=256), tmp_path / "mlp.onnx")
    return validated(register(scientist_actor, registered, path))


def test_optimizing_an_mlp_gives_a_smaller_version_that_agrees(mlp_version, scientist_actor):
    optimization, result = _optimized(scientist_actor, mlp_version)
    assert optimization.status == JobStatus.SUCCEEDED
    assert result.status == VersionStatus.READY, result.status_reason
    assert result.derived_from_id == mlp_version.pk
    assert result.params["optimization"] == "int8"
    assert result.signature == mlp_version.signature
    assert result.model_artifact.size < mlp_version.model_artifact.size * 0.6
    report = optimization.report
    assert report["size"]["optimized"] == result.model_artifact.size
    assert report["quantized_nodes"] > 0
    assert report["latency"]["ratio"] > 0  # a ratio is shown; its value depends on the machine
    # Stated tolerance for int8: |optimized - original| <= 0.05 + 0.05 * |original|.
    assert report["agreement"]["tolerance"] == {"absolute": 0.05, "relative": 0.05}
    features = np.random.default_rng(11).normal(size=(500, 4)).astype(np.float32)
    original = _run(_file(mlp_version), {"x": features})
    optimized = _run(_file(result), {"x": features})
    assert np.all(np.abs(optimized[0] - original[0]) <= 0.05 + 0.05 * np.abs(original[0]))
    assert np.mean(optimized[1] == original[1]) >= 0.95


def test_optimizing_a_scikit_learn_classifier(registered, scientist_actor, tmp_path):
    estimator = MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=200, random_state=0)
    path = onnx_files.save(onnx_files.sklearn_onnx(estimator), tmp_path / "sk.onnx")
    version = validated(register(scientist_actor, registered, path))
    optimization, result = _optimized(scientist_actor, version)
    assert result.status == VersionStatus.READY, result.status_reason
    assert result.model_artifact.size < version.model_artifact.size
    features, _labels = onnx_files.iris()
    original = _run(path, {"X": features})
    optimized = _run(_file(result), {"X": features})
    assert np.mean(original[0] == optimized[0]) >= 0.97
    probabilities = [
        np.array([[row[key] for key in sorted(row)] for row in output])
        for output in (original[1], optimized[1])
    ]
    assert np.all(np.abs(probabilities[1] - probabilities[0]) <= 0.05 + 0.05 * probabilities[0])
    assert optimization.report["agreement"]["within_tolerance"] is True


def test_float16_where_it_applies(mlp_version, scientist_actor):
    if not optimize.float16_available():
        optimization, result = _optimized(scientist_actor, mlp_version, "float16")
        assert optimization.status == JobStatus.FAILED
        assert "onnxconverter-common" in optimization.status_reason
        return
    optimization, result = _optimized(scientist_actor, mlp_version, "float16")
    assert result.status == VersionStatus.READY, result.status_reason
    assert result.model_artifact.size < mlp_version.model_artifact.size * 0.6
    features = np.random.default_rng(5).normal(size=(300, 4)).astype(np.float32)
    original = _run(_file(mlp_version), {"x": features})[0]
    optimized = _run(_file(result), {"x": features})[0]
    assert optimized.dtype == np.float32  # inputs and outputs stay float32
    assert np.all(np.abs(optimized - original) <= 0.01 + 0.01 * np.abs(original))


def test_an_unquantizable_model_says_why(registered, scientist_actor, tmp_path):
    path = onnx_files.save(
        onnx_files.sklearn_onnx(LogisticRegression(max_iter=200)), tmp_path / "lr.onnx"
    )
    version = validated(register(scientist_actor, registered, path))
    optimization, result = _optimized(scientist_actor, version)
    assert result is None
    assert optimization.status == JobStatus.FAILED
    assert optimization.status_reason.startswith(
        "This model cannot be quantized: dynamic int8 quantization applies to MatMul, Gemm, "
        "Conv, LSTM, Attention and Gather with constant float weights, and the model has none"
    )
    assert "LinearClassifier (1)" in optimization.status_reason
    assert ModelVersion.objects.count() == 1


def test_a_tiny_model_is_refused_when_it_would_not_shrink(registered, scientist_actor, tmp_path):
    path = onnx_files.save(onnx_files.linear_regressor(), tmp_path / "tiny.onnx")
    version = validated(register(scientist_actor, registered, path))
    optimization, result = _optimized(scientist_actor, version)
    assert result is None
    assert "would not be smaller" in optimization.status_reason
    assert "Nothing was registered." in optimization.status_reason


def test_agreement_uses_the_reference_csv_and_the_compare_page_shows_it(
    registered, scientist_actor, scientist, client, tmp_path
):
    from registry.uploads import HashedUpload

    features, _labels = onnx_files.iris()
    reference = tmp_path / "reference.csv"
    reference.write_text(
        "a,b,c,d\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in features) + "\n"
    )
    path = onnx_files.save(scaled_mlp(hidden=256), tmp_path / "mlp.onnx")
    version = validated(
        register(scientist_actor, registered, path, reference=HashedUpload.from_path(reference))
    )
    optimization, result = _optimized(scientist_actor, version)
    agreement = optimization.report["agreement"]
    assert (agreement["data"], agreement["rows"]) == ("reference CSV", 150)
    assert result.reference_profile == version.reference_profile
    client.force_login(scientist)
    page = client.get(f"/models/iris/compare/?a=1&b={result.number}").content.decode()
    assert "Optimization: v1 → v2 (int8)" in page
    assert "Agreement of outputs on 150 rows of reference CSV" in page
    assert "|optimized − original| ≤ 0.05 + 0.05 × |original|" in page
    assert "Single-row latency" in page
    detail = client.get(f"/models/iris/versions/{result.number}/").content.decode()
    assert 'href="/models/iris/versions/1/">v1</a> (int8 optimization' in detail


def test_the_optimize_button_needs_a_scientist_and_the_team(
    client, viewer, outsider, scientist, mlp_version
):
    url = "/models/iris/versions/1/optimize/"
    client.force_login(viewer)
    assert client.post(url, {"method": "int8"}).status_code == 403
    client.force_login(outsider)
    assert client.post(url, {"method": "int8"}).status_code == 404
    assert Optimization.objects.count() == 0
    client.force_login(scientist)
    page = client.get("/models/iris/versions/1/").content.decode()
    assert 'id="optimize-form"' in page and "csrfmiddlewaretoken" in page
    response = client.post(url, {"method": "int8"})
    assert response.status_code == 302
    assert Optimization.objects.get().method == "int8"
    # A second click while the first runs is refused, not duplicated.
    client.post(url, {"method": "int8"})
    assert Optimization.objects.count() == 1


def test_the_api_optimizes_and_lists(scientist_api, viewer_api, mlp_version):
    url = "/api/v1/models/iris/versions/1/optimize/"
    assert viewer_api.post(url, {"method": "int8"}, format="json").status_code == 403
    bad = scientist_api.post(url, {"method": "int4"}, format="json")
    assert bad.status_code == 400
    response = scientist_api.post(url, {"method": "int8"}, format="json")
    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    listed = scientist_api.get("/api/v1/models/iris/versions/1/optimizations/").json()
    assert [item["id"] for item in listed] == [response.json()["id"]]


def test_only_ready_versions_can_be_optimized(registered, scientist_actor, tmp_path):
    from common.errors import ApplicationError

    path = onnx_files.save(scaled_mlp(), tmp_path / "mlp.onnx")
    version = register(scientist_actor, registered, path)
    with pytest.raises(ApplicationError) as refused:
        services.version_optimize(actor=scientist_actor, version=version)
    assert refused.value.status == 409
    assert Optimization.objects.count() == 0


# ---------------------------------------------------------------------------------------------
# The version page's optimization partial.

OPTIMIZATION_PARTIAL = {"HX-Request": "true", "HX-Target": "optimization-status"}


def _partial(client, url="/models/iris/versions/1/"):
    response = client.get(url, headers=OPTIMIZATION_PARTIAL)
    assert response.status_code == 200
    assert "HX-Refresh" not in response
    return response.content.decode()


def test_the_optimization_partial_polls_while_in_flight_and_links_the_result(
    client, scientist, scientist_actor, mlp_version
):
    client.force_login(scientist)
    assert 'id="optimization-status">' in client.get("/models/iris/versions/1/").content.decode()
    client.post("/models/iris/versions/1/optimize/", {"method": "int8"})
    optimization = Optimization.objects.get()
    polling = 'hx-get="/models/iris/versions/1/" hx-trigger="every 2s" hx-swap="outerHTML"'

    page = client.get("/models/iris/versions/1/").content.decode()
    assert f'<div id="optimization-status" {polling}>' in page
    pending = _partial(client)
    assert pending.startswith(f'<div id="optimization-status" {polling}>')
    assert "<html" not in pending
    assert 'status-pending">pending' in pending and "waiting for a worker" in pending

    tasks.optimize_version(optimization.pk)
    optimization.refresh_from_db()
    assert optimization.status == JobStatus.SUCCEEDED
    done = _partial(client)
    assert "hx-trigger" not in done
    assert 'status-succeeded">succeeded' in done
    assert f'<a href="/models/iris/versions/{optimization.result.number}/">v2</a>' in done
    assert 'href="/models/iris/compare/?a=1&amp;b=2">compare with v1</a>' in done
    assert "hx-trigger" not in client.get("/models/iris/versions/1/").content.decode()


def test_a_failed_optimization_stops_polling_and_says_why(
    client, viewer, scientist_actor, mlp_version
):
    optimization = services.version_optimize(actor=scientist_actor, version=mlp_version)
    services.optimization_start(optimization_id=optimization.pk)
    client.force_login(viewer)
    running = _partial(client)
    assert 'hx-trigger="every 2s"' in running
    assert 'status-running">running' in running and "optimizing and measuring" in running
    services.optimization_fail(
        optimization_id=optimization.pk, reason="Quantization <failed>: no MatMul to quantize."
    )
    failed = _partial(client)
    assert "hx-trigger" not in failed
    assert (
        '<span class="error" role="alert">Quantization &lt;failed&gt;: no MatMul to quantize.'
        in failed
    )
    assert ModelVersion.objects.count() == 1
    # A viewer follows progress but has no Optimize button.
    assert 'id="optimize-form"' not in client.get("/models/iris/versions/1/").content.decode()


def test_another_team_cannot_poll_the_optimization_partial(
    client, outsider, scientist_actor, mlp_version
):
    services.version_optimize(actor=scientist_actor, version=mlp_version)
    client.force_login(outsider)
    response = client.get("/models/iris/versions/1/", headers=OPTIMIZATION_PARTIAL)
    assert response.status_code == 404
    assert b"optimization-status" not in response.content
