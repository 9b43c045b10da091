"""Conversion on the user's side: scikit-learn, XGBoost and LightGBM models converted to ONNX,
both run on the sample, refused beyond the tolerance; `--from onnx --expected` for files exported
elsewhere; and the parity report on the version page."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import joblib
import lightgbm
import numpy as np
import onnxruntime
import pytest
import xgboost
from modeldeck_client import convert
from modeldeck_client.convert import ConversionError
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

RNG = np.random.default_rng(7)
X = RNG.normal(size=(400, 5)).astype(np.float32)
Y_CLASS = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int64)
Y_MULTI = np.digitize(X[:, 0], [-0.5, 0.5]).astype(np.int64)
Y_VALUE = (3 * X[:, 0] - X[:, 3] + 0.1 * RNG.normal(size=400)).astype(np.float32)


def _sample(folder: Path, rows: int = 120) -> Path:
    path = folder / "sample.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"f{i}" for i in range(X.shape[1])])
        writer.writerows(X[:rows].tolist())
    return path


MODELS = {
    "sklearn-pipeline-classifier": (
        "sklearn",
        lambda: make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y_CLASS),
    ),
    "sklearn-forest-regressor": (
        "sklearn",
        lambda: RandomForestRegressor(n_estimators=15, max_depth=5, random_state=0).fit(X, Y_VALUE),
    ),
    "xgboost-classifier": (
        "xgboost",
        lambda: xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(X, Y_CLASS),
    ),
    "xgboost-multiclass": (
        "xgboost",
        lambda: xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(X, Y_MULTI),
    ),
    "xgboost-regressor": (
        "xgboost",
        lambda: xgboost.XGBRegressor(n_estimators=20, max_depth=3).fit(X, Y_VALUE),
    ),
    "lightgbm-classifier": (
        "lightgbm",
        lambda: lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(X, Y_CLASS),
    ),
    "lightgbm-multiclass": (
        "lightgbm",
        lambda: lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(X, Y_MULTI),
    ),
    "lightgbm-regressor": (
        "lightgbm",
        lambda: lightgbm.LGBMRegressor(n_estimators=20, verbose=-1).fit(X, Y_VALUE),
    ),
}


@pytest.mark.parametrize("case", sorted(MODELS))
def test_conversion_answers_like_the_original(case, tmp_path):
    framework, build = MODELS[case]
    model = build()
    pickled = tmp_path / "model.pkl"
    joblib.dump(model, pickled)

    conversion = convert.convert(pickled, framework=framework, sample_path=_sample(tmp_path))

    report = conversion.report
    assert report.passed
    assert report.rows == 120
    assert report.max_abs_diff <= 1e-4
    # Checked again here, independently: the ONNX file on disk against the original.
    session = onnxruntime.InferenceSession(str(conversion.onnx_path))
    outputs = dict(
        zip(
            [o.name for o in session.get_outputs()],
            session.run(None, {"input": X[:120]}),
            strict=True,
        )
    )
    if hasattr(model, "predict_proba"):
        assert report.compared == ["probabilities", "label"]
        assert report.label_agreement == 1.0
        np.testing.assert_allclose(
            outputs["probabilities"], model.predict_proba(X[:120]), atol=1e-4, rtol=1e-3
        )
        assert outputs["label"].reshape(-1).tolist() == model.predict(X[:120]).tolist()
    else:
        assert report.compared == ["prediction"]
        np.testing.assert_allclose(
            next(iter(outputs.values())).reshape(-1), model.predict(X[:120]), atol=1e-4, rtol=1e-3
        )
    # Every output has one row per input row, whatever the converter declared.
    for output in session.get_outputs():
        assert not isinstance(output.shape[0], int), (output.name, output.shape)
    import sklearn

    module = {"sklearn": sklearn, "xgboost": xgboost, "lightgbm": lightgbm}[framework]
    params = conversion.params
    assert params["conversion_framework"] == framework
    assert params["conversion_framework_version"] == module.__version__
    assert params["conversion_converter"].split()[0] == (
        "skl2onnx" if framework == "sklearn" else "onnxmltools"
    )
    assert params["conversion_parity_rows"] == 120
    assert params["conversion_parity_passed"] is True


def test_native_xgboost_and_lightgbm_files_convert(tmp_path):
    booster = xgboost.XGBRegressor(n_estimators=10, max_depth=3).fit(X, Y_VALUE).get_booster()
    booster.save_model(str(tmp_path / "model.json"))
    lgb = lightgbm.LGBMRegressor(n_estimators=10, verbose=-1).fit(X, Y_VALUE).booster_
    lgb.save_model(str(tmp_path / "model.txt"))
    sample = _sample(tmp_path)

    from_json = convert.convert(tmp_path / "model.json", framework="xgboost", sample_path=sample)
    from_txt = convert.convert(tmp_path / "model.txt", framework="lightgbm", sample_path=sample)
    assert from_json.report.passed and from_txt.report.passed
    assert from_json.report.compared == from_txt.report.compared == ["prediction"]


def test_outputs_that_disagree_beyond_the_tolerance_are_refused(tmp_path):
    """float32 ONNX against float64 scikit-learn differs by ~1e-7: a zero tolerance refuses."""
    joblib.dump(LogisticRegression().fit(X, Y_CLASS), tmp_path / "model.pkl")
    with pytest.raises(ConversionError, match=r"probabilities: [0-9]+ values differ beyond"):
        convert.convert(
            tmp_path / "model.pkl",
            framework="sklearn",
            sample_path=_sample(tmp_path),
            absolute_tolerance=0.0,
            relative_tolerance=0.0,
        )


def test_from_onnx_checks_against_the_saved_reference_output(tmp_path):
    """The recipe for PyTorch/TensorFlow: export ONNX elsewhere, save the original's output."""
    from skl2onnx import to_onnx

    model = LogisticRegression().fit(X, Y_CLASS)
    onnx_path = tmp_path / "exported.onnx"
    onnx_path.write_bytes(
        to_onnx(model, X[:1], options={id(model): {"zipmap": False}}).SerializeToString()
    )
    np.save(tmp_path / "inputs.npy", X[:50])
    np.savez(tmp_path / "expected.npz", probabilities=model.predict_proba(X[:50]))

    checked = convert.check_onnx(
        onnx_path, sample_path=tmp_path / "inputs.npy", expected_path=tmp_path / "expected.npz"
    )
    assert checked.report.compared == ["probabilities"]
    assert checked.params["conversion_framework"] == "onnx"

    np.savez(tmp_path / "wrong.npz", probabilities=model.predict_proba(X[:50])[:, ::-1])
    with pytest.raises(ConversionError, match=r"probabilities: [0-9]+ values differ"):
        convert.check_onnx(
            onnx_path, sample_path=tmp_path / "inputs.npy", expected_path=tmp_path / "wrong.npz"
        )


def test_the_server_receives_only_onnx(tmp_path):
    """What `push --from` uploads is the converted file: ONNX, never the pickle."""
    joblib.dump(LogisticRegression().fit(X, Y_CLASS), tmp_path / "model.pkl")
    conversion = convert.convert(
        tmp_path / "model.pkl", framework="sklearn", sample_path=_sample(tmp_path)
    )
    import onnx

    onnx.checker.check_model(str(conversion.onnx_path))
    assert conversion.onnx_path.read_bytes()[:2] != pickle.dumps(0)[:2]


# -- through the CLI, against the live stack ------------------------------------------------------


@pytest.mark.slow
def test_push_from_lightgbm_uploads_onnx_with_the_parity_report(live, tmp_path):
    joblib.dump(
        lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(X, Y_CLASS), tmp_path / "m.pkl"
    )
    live.cli_json("models", "create", "kit-lgbm")
    result = live.cli(
        "--json", "versions", "push", str(tmp_path / "m.pkl"), "--model", "kit-lgbm",
        "--from", "lightgbm", "--sample", str(_sample(tmp_path)), "--wait",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "parity check passed: 120 rows, probabilities, label" in result.stderr
    import json

    version = json.loads(result.stdout)
    assert version["status"] == "ready"
    assert version["file_name"] == "m.onnx"
    params = version["params"]
    assert params["conversion_framework"] == "lightgbm"
    assert params["conversion_framework_version"] == lightgbm.__version__
    assert params["conversion_parity_label_agreement"] == 1.0
    assert [s["name"] for s in version["signature"]["inputs"]] == ["input"]


@pytest.mark.slow
def test_push_refuses_to_upload_when_the_parity_check_fails(live, tmp_path):
    joblib.dump(LogisticRegression().fit(X, Y_CLASS), tmp_path / "m.pkl")
    live.cli_json("models", "create", "kit-strict")
    result = live.cli(
        "versions", "push", str(tmp_path / "m.pkl"), "--model", "kit-strict", "--from", "sklearn",
        "--sample", str(_sample(tmp_path)), "--atol", "0", "--rtol", "0",
    )  # fmt: skip
    assert result.returncode == 1
    assert "not uploaded: The ONNX conversion does not answer like the original" in result.stderr
    assert live.cli_json("versions", "list", "kit-strict") == []


def test_version_page_shows_the_conversion_and_lineage(db, client, team, scientist, tmp_path):
    """The partial on the version page renders the params the CLI recorded."""
    from registry import services
    from tests.conftest import actor_for
    from tests.registry import onnx_files
    from tests.registry.conftest import register

    actor = actor_for(scientist, team)
    model = services.model_create(actor=actor, team=team, name="page", description="", tags={})
    path = onnx_files.save(onnx_files.linear_regressor(), tmp_path / "m.onnx")
    register(
        actor,
        model,
        path,
        params={
            "conversion_framework": "xgboost",
            "conversion_framework_version": "3.2.0",
            "conversion_converter": "onnxmltools 1.16.0",
            "conversion_parity_rows": 120,
            "conversion_parity_compared": "probabilities, label",
            "conversion_parity_max_abs_diff": 1.2e-07,
            "conversion_parity_tolerance": "0.0001 + 0.001·|expected|",
            "conversion_parity_passed": True,
            "conversion_parity_label_agreement": 1.0,
            "mlflow_model_uri": "models:/fraud@champion",
            "mlflow_run_id": "<b>abc123</b>",
        },
    )
    client.force_login(scientist)
    page = client.get("/models/page/versions/1/").content.decode()
    assert 'id="provenance"' in page
    assert "xgboost 3.2.0 with onnxmltools 1.16.0" in page
    assert "passed on 120 sample rows (probabilities, label)" in page
    assert "labels agree on 100 %" in page
    assert "<code>models:/fraud@champion</code>" in page
    assert "&lt;b&gt;abc123&lt;/b&gt;" in page  # escaped, never markup

    plain = services.model_create(actor=actor, team=team, name="plain", description="", tags={})
    register(actor, plain, path)
    assert 'id="provenance"' not in client.get("/models/plain/versions/1/").content.decode()
