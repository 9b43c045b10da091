"""Convert scikit-learn, XGBoost and LightGBM models to ONNX on the user's own machine and prove
that the ONNX file answers like the original on a sample before anything is uploaded.

Loading a pickle runs code from the file, so it happens here, in the process of the person who
made or trusts the model, never on the server (which only ever receives the ONNX file). Needs the
`convert` extra: pip install 'modeldeck-client[convert]'.
"""

from __future__ import annotations

import csv
import importlib
import importlib.metadata
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FRAMEWORKS = ("sklearn", "xgboost", "lightgbm", "onnx")
DEFAULT_ABSOLUTE_TOLERANCE = 1e-4
DEFAULT_RELATIVE_TOLERANCE = 1e-3
MAX_SAMPLE_ROWS = 100_000


class ConversionError(Exception):
    """The model could not be loaded, converted, or does not answer like its ONNX form."""


@dataclass
class ParityReport:
    """How the ONNX file compares with the original on the sample."""

    rows: int
    compared: list[str]
    max_abs_diff: float
    absolute_tolerance: float
    relative_tolerance: float
    label_agreement: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        text = (
            f"{self.rows} rows, {', '.join(self.compared)}: max |difference| "
            f"{self.max_abs_diff:.3g} (tolerance {self.absolute_tolerance:g} + "
            f"{self.relative_tolerance:g}·|expected|)"
        )
        if self.label_agreement is not None:
            text += f", labels agree on {self.label_agreement:.2%}"
        return text


@dataclass
class Conversion:
    """An ONNX file ready to upload and the params that record where it came from."""

    onnx_path: Path
    report: ParityReport
    params: dict[str, Any]


def _numpy():
    try:
        import numpy
    except ImportError:
        raise ConversionError(
            "Conversion needs the convert extra: pip install 'modeldeck-client[convert]'."
        ) from None
    return numpy


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def read_sample(path: Path):
    """A numeric CSV with a header row (or a .npy array) as a float32 matrix."""
    np = _numpy()
    path = Path(path)
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False).astype(np.float32)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise ConversionError(f"{path} is empty; it needs a header row and sample rows.")
        rows = []
        for line_number, row in enumerate(reader, start=2):
            if len(rows) >= MAX_SAMPLE_ROWS:
                break
            if len(row) != len(header):
                raise ConversionError(
                    f"{path} line {line_number} has {len(row)} values; the header has "
                    f"{len(header)}."
                )
            try:
                rows.append([float(value) for value in row])
            except ValueError:
                raise ConversionError(
                    f"{path} line {line_number}: only numeric features can be converted."
                ) from None
    if not rows:
        raise ConversionError(f"{path} has no sample rows.")
    return np.asarray(rows, dtype=np.float32)


def load_model(path: Path, framework: str) -> Any:
    """The user's model, loaded in this process: native XGBoost/LightGBM files, else pickle."""
    path = Path(path)
    if framework == "xgboost" and path.suffix in {".json", ".ubj"}:
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(path))
        return booster
    if framework == "lightgbm" and path.suffix == ".txt":
        import lightgbm

        return lightgbm.Booster(model_file=str(path))
    try:
        import joblib

        return joblib.load(path)  # pickle underneath: runs only in the user's own process
    except ImportError:
        import pickle

        with path.open("rb") as handle:
            return pickle.load(handle)  # noqa: S301 (the user's own file, in the user's process)


def _is_classifier(model: Any) -> bool:
    return hasattr(model, "predict_proba") or getattr(model, "_estimator_type", "") == "classifier"


def _to_onnx(model: Any, framework: str, features: int) -> tuple[Any, str]:
    """The ONNX graph and the converter that made it; one float input named `input`."""
    if framework == "sklearn":
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        initial_types = [("input", FloatTensorType([None, features]))]

        # Plain probability tensors instead of ZipMap's list of dicts: servable and comparable.
        options = {"zipmap": False} if _is_classifier(model) else None
        return convert_sklearn(model, initial_types=initial_types, options=options), "skl2onnx"
    from onnxmltools.convert.common.data_types import FloatTensorType

    initial_types = [("input", FloatTensorType([None, features]))]
    if framework == "xgboost":
        import onnxmltools

        return onnxmltools.convert_xgboost(model, initial_types=initial_types), "onnxmltools"
    if framework == "lightgbm":
        import onnxmltools

        graph = onnxmltools.convert_lightgbm(model, initial_types=initial_types, zipmap=False)
        return graph, "onnxmltools"
    raise ConversionError(f"--from must be one of {', '.join(FRAMEWORKS)}.")


def _free_batch_dimension(graph: Any, outputs: list[tuple[str, Any]], *, rows: int) -> bool:
    """Some converters declare a fixed first dimension (1) on outputs that really have one row
    per input row (onnxmltools' XGBoost labels); name it `N`, so that the signature, the
    serving runtime and a Triton export all see a batch dimension."""
    np = _numpy()
    changed = False
    actual = dict(outputs)
    for output in graph.graph.output:
        dims = output.type.tensor_type.shape.dim if output.type.HasField("tensor_type") else []
        value = actual.get(output.name)
        if not dims or value is None or rows == 1:
            continue
        shape = np.asarray(value).shape
        first = dims[0]
        if shape and shape[0] == rows and first.HasField("dim_value") and first.dim_value != rows:
            first.Clear()
            first.dim_param = "N"
            changed = True
    return changed


def _original_outputs(model: Any, sample) -> dict[str, Any]:
    """What the original answers: probabilities and labels for classifiers, else predictions."""
    np = _numpy()
    if _is_classifier(model):
        return {
            "probabilities": np.asarray(model.predict_proba(sample), dtype=np.float64),
            "label": np.asarray(model.predict(sample)),
        }
    if type(model).__name__ == "Booster" and type(model).__module__.startswith("xgboost"):
        import xgboost

        return {"prediction": np.asarray(model.predict(xgboost.DMatrix(sample)), np.float64)}
    return {"prediction": np.asarray(model.predict(sample), dtype=np.float64)}


def _run_onnx(path: Path, feeds: dict[str, Any]) -> list[tuple[str, Any]]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return list(zip(names, session.run(None, feeds), strict=True))


def _pick(outputs: list[tuple[str, Any]], *, probabilities: bool):
    np = _numpy()
    numeric = [(n, np.asarray(v)) for n, v in outputs if np.asarray(v).dtype.kind in "fiu"]
    if probabilities:
        matrices = [(n, v) for n, v in numeric if v.ndim == 2 and v.shape[1] > 1]
        if matrices:
            return matrices[-1]
    return numeric[-1] if numeric else outputs[-1]


def compare(
    expected,
    actual,
    *,
    name: str,
    report: ParityReport,
) -> None:
    """Fold one output's comparison into the report."""
    np = _numpy()
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if expected.size == actual.size and expected.shape != actual.shape:
        actual = actual.reshape(expected.shape)  # (n,) against (n, 1)
    if expected.shape != actual.shape:
        report.failures.append(f"{name}: shape {actual.shape}, expected {expected.shape}")
        return
    difference = np.abs(expected - actual)
    report.compared.append(name)
    report.max_abs_diff = max(report.max_abs_diff, float(difference.max(initial=0.0)))
    allowed = report.absolute_tolerance + report.relative_tolerance * np.abs(expected)
    over = int((difference > allowed).sum())
    if over or not np.isfinite(actual).all():
        report.failures.append(
            f"{name}: {over} values differ beyond the tolerance "
            f"(max |difference| {float(difference.max(initial=0.0)):.3g})"
        )


def convert(
    model_path: Path,
    *,
    framework: str,
    sample_path: Path,
    absolute_tolerance: float = DEFAULT_ABSOLUTE_TOLERANCE,
    relative_tolerance: float = DEFAULT_RELATIVE_TOLERANCE,
    workdir: Path | None = None,
) -> Conversion:
    """Load the model file, convert it, and compare on the sample (ConversionError if they
    disagree)."""
    if framework not in {"sklearn", "xgboost", "lightgbm"}:
        raise ConversionError("convert() takes sklearn, xgboost or lightgbm models.")
    sample = read_sample(sample_path)
    return convert_model(
        load_model(model_path, framework),
        framework=framework,
        sample=sample,
        name=Path(model_path).stem,
        absolute_tolerance=absolute_tolerance,
        relative_tolerance=relative_tolerance,
        workdir=workdir,
    )


def convert_model(
    model: Any,
    *,
    framework: str,
    sample,
    name: str = "model",
    absolute_tolerance: float = DEFAULT_ABSOLUTE_TOLERANCE,
    relative_tolerance: float = DEFAULT_RELATIVE_TOLERANCE,
    workdir: Path | None = None,
) -> Conversion:
    """Convert a loaded model and compare both on the sample matrix."""
    np = _numpy()
    try:
        graph, converter = _to_onnx(model, framework, sample.shape[1])
    except ConversionError:
        raise
    except Exception as error:  # converters raise anything from RuntimeError to KeyError
        raise ConversionError(
            f"{converter_name(framework)} could not convert the model: {error}"
        ) from error
    folder = Path(workdir or tempfile.mkdtemp(prefix="modeldeck-convert-"))
    onnx_path = folder / f"{name}.onnx"
    onnx_path.write_bytes(graph.SerializeToString())

    original = _original_outputs(model, sample)
    converted = _run_onnx(onnx_path, {"input": sample})
    if _free_batch_dimension(graph, converted, rows=len(sample)):
        onnx_path.write_bytes(graph.SerializeToString())
    report = ParityReport(
        rows=len(sample),
        compared=[],
        max_abs_diff=0.0,
        absolute_tolerance=absolute_tolerance,
        relative_tolerance=relative_tolerance,
    )
    if "probabilities" in original:
        _, probabilities = _pick(converted, probabilities=True)
        compare(original["probabilities"], probabilities, name="probabilities", report=report)
        labels = next((np.asarray(v) for n, v in converted if "label" in n.lower()), None)
        if labels is not None:
            agreement = float(
                (labels.reshape(-1).astype(str) == original["label"].reshape(-1).astype(str)).mean()
            )
            report.label_agreement = agreement
            report.compared.append("label")
            if agreement < 1.0:
                report.failures.append(f"label: agrees on {agreement:.2%} of the rows only")
    else:
        _, prediction = _pick(converted, probabilities=False)
        compare(original["prediction"], prediction, name="prediction", report=report)
    if not report.passed:
        raise ConversionError(
            "The ONNX conversion does not answer like the original model: "
            + "; ".join(report.failures)
        )
    return Conversion(onnx_path, report, conversion_params(framework, converter, report))


def converter_name(framework: str) -> str:
    return "skl2onnx" if framework == "sklearn" else "onnxmltools"


def _module_version(module: str) -> str:
    """The framework's own __version__ (xgboost-cpu and xgboost are one module, two names)."""
    try:
        return str(importlib.import_module(module).__version__)
    except (ImportError, AttributeError):
        return "unknown"


def conversion_params(framework: str, converter: str, report: ParityReport) -> dict[str, Any]:
    """What the version page shows about the conversion: flat params, prefixed `conversion_`."""
    params: dict[str, Any] = {
        "conversion_framework": framework,
        "conversion_framework_version": _module_version(framework),
        "conversion_converter": f"{converter} {_version(converter)}" if converter else "",
        "conversion_onnxruntime_version": _version("onnxruntime"),
        "conversion_parity_rows": report.rows,
        "conversion_parity_compared": ", ".join(report.compared),
        "conversion_parity_max_abs_diff": report.max_abs_diff,
        "conversion_parity_tolerance": (
            f"{report.absolute_tolerance:g} + {report.relative_tolerance:g}·|expected|"
        ),
        "conversion_parity_passed": report.passed,
    }
    if report.label_agreement is not None:
        params["conversion_parity_label_agreement"] = report.label_agreement
    return {key: value for key, value in params.items() if value != ""}


def _load_arrays(path: Path) -> dict[str, Any]:
    """Named arrays (.npz) or one unnamed array (.npy, or a numeric CSV)."""
    np = _numpy()
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    return {"": read_sample(path) if path.suffix != ".npy" else np.load(path, allow_pickle=False)}


def check_onnx(
    onnx_path: Path,
    *,
    sample_path: Path,
    expected_path: Path,
    absolute_tolerance: float = DEFAULT_ABSOLUTE_TOLERANCE,
    relative_tolerance: float = DEFAULT_RELATIVE_TOLERANCE,
) -> Conversion:
    """An ONNX file exported elsewhere (torch.onnx.export, tf2onnx) against the reference output
    the original framework saved: inputs from `sample_path`, outputs from `expected_path`
    (.npy/.csv for the first output, .npz with output names for several)."""
    np = _numpy()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inputs = _load_arrays(sample_path)
    if "" in inputs:
        if len(session.get_inputs()) != 1:
            raise ConversionError("The model has several inputs: give --sample as an .npz.")
        inputs = {session.get_inputs()[0].name: inputs[""]}
    feeds = {}
    for spec in session.get_inputs():
        if spec.name not in inputs:
            raise ConversionError(f"The sample has no array for input {spec.name!r}.")
        dtype = np.float32 if spec.type == "tensor(float)" else None
        feeds[spec.name] = np.asarray(inputs[spec.name], dtype=dtype)
    outputs = _run_onnx(onnx_path, feeds)
    expected = _load_arrays(expected_path)
    report = ParityReport(
        rows=int(next(iter(feeds.values())).shape[0]),
        compared=[],
        max_abs_diff=0.0,
        absolute_tolerance=absolute_tolerance,
        relative_tolerance=relative_tolerance,
    )
    by_name = dict(outputs)
    for name, values in expected.items():
        output_name = name or outputs[0][0]
        if output_name not in by_name:
            raise ConversionError(f"The model has no output {output_name!r}.")
        compare(values, by_name[output_name], name=output_name, report=report)
    if not report.passed:
        raise ConversionError(
            "The ONNX model does not answer like the saved reference output: "
            + "; ".join(report.failures)
        )
    return Conversion(Path(onnx_path), report, conversion_params("onnx", "", report))
