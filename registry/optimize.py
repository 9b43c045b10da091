"""Derives a smaller, faster ONNX file from a version, in a child process with limits.

Run as `python -m registry.optimize SOURCE OUTPUT --method int8|float16 …`; it prints one JSON
object: `{"ok": true, "report": …}` or `{"ok": false, "reason": "…", "report": …}`.

Steps: onnxruntime's graph optimizations at the basic (or extended) level, saved through
`SessionOptions.optimized_model_filepath` — those levels keep the graph portable, unlike `all`,
which writes hardware-specific layouts; then either dynamic int8 quantization of the weights
(`onnxruntime.quantization.quantize_dynamic`; Gemm with constant weights is first rewritten as
MatMul + Add so it is covered too) or float16 weights (`onnxconverter-common`, inputs and
outputs kept float32 so the signature does not change). Finally both files are run side by side:
single-row latency as a ratio, and agreement of the outputs on the reference CSV (or on
generated rows when there is none), within a stated tolerance.

Like `registry.validation`, this module must not import Django.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from registry import batch, sandbox

# Outputs agree when |optimized - original| <= absolute + relative * |original|.
TOLERANCE = {"int8": (0.05, 0.05), "float16": (0.01, 0.01)}
GRAPH_LEVELS = ("basic", "extended")
QUANTIZABLE_OPS = {"MatMul", "Gemm", "Conv", "LSTM", "Attention", "Gather"}
QUANTIZED_OPS = {
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeMatMul",
    "DynamicQuantizeLSTM",
    "QAttention",
    "DequantizeLinear",
}
LATENCY_ROUNDS = 30


class Refusal(Exception):
    """The model cannot be optimized this way; the message is shown to people as it is."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.message = message
        self.report = report or {}


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if "] : " in text[:80]:
        text = text.split("] : ", 1)[1]
    return text[:400] or type(error).__name__


def float16_available() -> bool:
    """Whether float16 conversion can run here (onnxconverter-common is optional)."""
    try:
        import onnxconverter_common.float16  # noqa: F401
    except ImportError:
        return False
    return True


def _session(path: Path, **options):
    import onnxruntime

    settings = onnxruntime.SessionOptions()
    settings.intra_op_num_threads = 1
    settings.inter_op_num_threads = 1
    settings.log_severity_level = 3
    for key, value in options.items():
        setattr(settings, key, value)
    return onnxruntime.InferenceSession(str(path), settings, providers=["CPUExecutionProvider"])


def optimize_graph(source: Path, destination: Path, *, level: str) -> None:
    """Apply onnxruntime's portable graph optimizations and save the result."""
    import onnxruntime

    levels = {
        "basic": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }
    try:
        _session(
            source,
            graph_optimization_level=levels[level],
            optimized_model_filepath=str(destination),
        )
    except Exception as error:
        raise Refusal(f"onnxruntime cannot optimize the graph: {_short(error)}") from None


def rewrite_gemm(model) -> int:
    """Gemm with a constant weight becomes MatMul + Add (same result), which dynamic
    quantization covers; returns how many were rewritten."""
    from onnx import helper, numpy_helper

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    rewritten = 0
    nodes = []
    for node in model.graph.node:
        attributes = {item.name: helper.get_attribute_value(item) for item in node.attribute}
        plain = (
            node.op_type == "Gemm"
            and node.domain in ("", "ai.onnx")
            and attributes.get("transA", 0) == 0
            and attributes.get("alpha", 1.0) == 1.0
            and attributes.get("beta", 1.0) == 1.0
            and len(node.input) >= 2
            and node.input[1] in initializers
        )
        if not plain:
            nodes.append(node)
            continue
        weight_name = node.input[1]
        prefix = f"{node.name or 'gemm'}__rewritten_{rewritten}"
        if attributes.get("transB", 0):
            weight = numpy_helper.to_array(initializers[weight_name]).T.copy()
            weight_name = f"{node.input[1]}__transposed_{rewritten}"
            model.graph.initializer.append(numpy_helper.from_array(weight, weight_name))
        has_bias = len(node.input) >= 3 and node.input[2]
        product = f"{node.output[0]}__matmul" if has_bias else node.output[0]
        nodes.append(
            helper.make_node(
                "MatMul", [node.input[0], weight_name], [product], name=f"{prefix}_matmul"
            )
        )
        if has_bias:
            nodes.append(
                helper.make_node(
                    "Add", [product, node.input[2]], [node.output[0]], name=f"{prefix}_add"
                )
            )
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {name for node in model.graph.node for name in node.input}
    kept = [tensor for tensor in model.graph.initializer if tensor.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return rewritten


def _operator_summary(model) -> str:
    counts = Counter(node.op_type for node in model.graph.node)
    return ", ".join(f"{name} ({count})" for name, count in counts.most_common(12))


def quantize_int8(source: Path, destination: Path, work: Path) -> dict[str, Any]:
    """Dynamic int8 quantization of the weights; refuses a model with nothing to quantize."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(source))
    rewritten = rewrite_gemm(model)
    candidates = sum(1 for node in model.graph.node if node.op_type in QUANTIZABLE_OPS)
    operators = _operator_summary(model)
    if not candidates:
        raise Refusal(
            "This model cannot be quantized: dynamic int8 quantization applies to MatMul, Gemm, "
            "Conv, LSTM, Attention and Gather with constant float weights, and the model has "
            f"none of them (its operators: {operators})."
        )
    prepared = work / "prepared.onnx"
    onnx.save(model, str(prepared))
    del model
    try:
        quantize_dynamic(
            str(prepared),
            str(destination),
            weight_type=QuantType.QInt8,
            # 7-bit weights: on x86 CPUs with AVX2 but without VNNI, onnxruntime's u8s8 kernel
            # (VPMADDUBSW) can saturate full-range int8 weights, so the same optimized file
            # would be accurate on one serving machine and not on another.
            reduce_range=True,
            extra_options={"MatMulConstBOnly": True},
        )
    except Exception as error:
        raise Refusal(f"This model cannot be quantized: {_short(error)}") from None
    quantized = onnx.load(str(destination))
    count = sum(1 for node in quantized.graph.node if node.op_type in QUANTIZED_OPS)
    if not count:
        raise Refusal(
            "This model cannot be quantized: none of its operators has constant float weights "
            f"that dynamic int8 quantization can store as int8 (its operators: {operators})."
        )
    return {"gemm_rewritten": rewritten, "quantized_nodes": count}


def convert_float16(source: Path, destination: Path) -> dict[str, Any]:
    """Float16 weights with float32 inputs and outputs; refuses where it does not apply."""
    import onnx
    from onnx import TensorProto

    if not float16_available():
        raise Refusal(
            "float16 conversion needs the onnxconverter-common package, which is not "
            "installed here; use int8 quantization instead."
        )
    from onnxconverter_common.float16 import convert_float_to_float16

    model = onnx.load(str(source))
    floats = sum(1 for tensor in model.graph.initializer if tensor.data_type == TensorProto.FLOAT)
    if not floats:
        raise Refusal(
            "float16 conversion does not apply: the model has no float32 weights "
            f"(its operators: {_operator_summary(model)})."
        )
    try:
        converted = convert_float_to_float16(model, keep_io_types=True)
    except Exception as error:
        raise Refusal(f"float16 conversion failed: {_short(error)}") from None
    onnx.save(converted, str(destination))
    return {"float_weights": floats}


# ---------------------------------------------------------------------------------------------
# Measuring the two files side by side.


def _generated_feeds(signature: dict, rows: int, seed: int = 0) -> dict | None:
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in signature.get("inputs", []):
        shape = [
            rows if index == 0 else (dim if dim > 0 else 1)
            for index, dim in enumerate(spec["shape"])
        ]
        datatype = spec["datatype"]
        if datatype == "BYTES":
            return None
        if datatype.startswith("FP"):
            feeds[spec["name"]] = rng.normal(size=shape).astype(sandbox.NUMPY_DTYPES[datatype])
        elif datatype == "BOOL":
            feeds[spec["name"]] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            feeds[spec["name"]] = rng.integers(0, 3, size=shape).astype(
                sandbox.NUMPY_DTYPES[datatype]
            )
    return feeds


def _reference_feeds(path: Path, signature: dict, rows: int) -> tuple[dict, int] | None:
    """Feeds from the first `rows` good rows of the reference CSV, or None if none fit."""
    try:
        header, reader = batch.read_csv(path, max_cell_chars=batch.MAX_CELL_CHARS)
        plan = batch.plan_columns(header, signature)
    except batch.Refusal:
        return None
    good = []
    for _number, cells in reader:
        if isinstance(cells, str) or len(cells) != len(plan.header):
            continue
        try:
            batch.tensors_for(plan, [cells])
        except ValueError:
            continue
        good.append(cells)
        if len(good) >= rows:
            break
    reader.close()
    if not good:
        return None
    return batch.tensors_for(plan, good), len(good)


def _as_matrix(value):
    """An output as a 2-D float array when it is numeric (ZipMap dicts by sorted key)."""
    import numpy as np

    if isinstance(value, list) and value and isinstance(value[0], dict):
        keys = sorted(value[0])
        return np.array([[row[key] for key in keys] for row in value], dtype=np.float64)
    array = np.asarray(value)
    return array.reshape(len(array), -1) if array.ndim else array.reshape(1, 1)


def compare_outputs(names, original, optimized, *, tolerance: tuple[float, float]) -> dict:
    """Per output: the largest and mean absolute difference and the share of values within
    tolerance (floats), or the share of rows that match exactly (labels, strings)."""
    import numpy as np

    absolute, relative = tolerance
    outputs, agree = {}, True
    for name, left, right in zip(names, original, optimized, strict=True):
        a, b = _as_matrix(left), _as_matrix(right)
        if a.dtype.kind == "f" or b.dtype.kind == "f":
            a, b = a.astype(np.float64), b.astype(np.float64)
            difference = np.abs(a - b)
            within = difference <= absolute + relative * np.abs(a)
            share = float(within.mean()) if within.size else 1.0
            outputs[name] = {
                "max_abs_diff": float(difference.max()) if difference.size else 0.0,
                "mean_abs_diff": float(difference.mean()) if difference.size else 0.0,
                "within_tolerance": round(share, 6),
            }
            agree = agree and share == 1.0
        else:
            matches = np.all(a == b, axis=1) if a.ndim == 2 else a == b
            outputs[name] = {"match_rate": round(float(np.mean(matches)), 6)}
    return {
        "tolerance": {"absolute": absolute, "relative": relative},
        "outputs": outputs,
        "within_tolerance": agree,
    }


def _median_ms(session, feeds, rounds: int) -> float:
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        session.run(None, feeds)
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return timings[len(timings) // 2]


def measure(
    source: Path,
    optimized: Path,
    *,
    method: str,
    signature: dict,
    reference_path: Path | None,
    reference_rows: int,
) -> dict[str, Any]:
    """Size, single-row latency (interleaved, as a ratio) and output agreement."""
    try:
        original_session, optimized_session = _session(source), _session(optimized)
    except Exception as error:
        raise Refusal(f"onnxruntime cannot load the optimized model: {_short(error)}") from None
    data, feeds, rows = "generated inputs", None, 0
    if reference_path is not None:
        found = _reference_feeds(reference_path, signature, reference_rows)
        if found is not None:
            (feeds, rows), data = found, "reference CSV"
    if feeds is None:
        rows = min(reference_rows, 200)
        feeds = _generated_feeds(signature, rows)
    report: dict[str, Any] = {}
    if feeds is None:
        report["agreement"] = None
        report["notes"] = ["No agreement check: string inputs need a reference CSV."]
        return report
    one_row = {name: value[:1] for name, value in feeds.items()}
    for session in (original_session, optimized_session):
        for _ in range(5):  # warm-up: first runs allocate
            session.run(None, one_row)
    original_ms, optimized_ms = [], []
    for _ in range(3):  # interleaved, so both see the same machine load
        original_ms.append(_median_ms(original_session, one_row, LATENCY_ROUNDS // 3))
        optimized_ms.append(_median_ms(optimized_session, one_row, LATENCY_ROUNDS // 3))
    a, b = sorted(original_ms)[1], sorted(optimized_ms)[1]
    report["latency"] = {
        "source_ms": round(a, 4),
        "optimized_ms": round(b, 4),
        "ratio": round(b / a, 3) if a > 0 else None,
        "runs": LATENCY_ROUNDS,
    }
    names = [output.name for output in original_session.get_outputs()]
    try:
        original = original_session.run(None, feeds)
        result = optimized_session.run(None, feeds)
    except Exception as error:
        raise Refusal(
            f"The optimized model fails on inputs the original accepts: {_short(error)}"
        ) from None
    report["agreement"] = {
        "data": data,
        "rows": rows,
        **compare_outputs(names, original, result, tolerance=TOLERANCE[method]),
    }
    return report


def _drop_unused_opsets(path: Path) -> None:
    """onnxruntime saves every domain it knows (training, experimental) in the opset imports;
    keep only those the graph uses, so the file loads anywhere and passes validation."""
    import onnx

    model = onnx.load(str(path))
    used = {node.domain or "" for node in model.graph.node}
    for function in model.functions:
        used |= {node.domain or "" for node in function.node}
    used |= {""}
    kept = [entry for entry in model.opset_import if (entry.domain or "") in used]
    if len(kept) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(kept)
        onnx.save(model, str(path))


def optimize_file(
    source: Path,
    output: Path,
    *,
    method: str,
    signature: dict,
    graph_level: str = "basic",
    reference_path: Path | None = None,
    reference_rows: int = 1_000,
) -> dict[str, Any]:
    """Every step in order; returns the report or raises Refusal with a readable reason."""
    import onnx

    if method not in TOLERANCE:
        raise Refusal(f"Unknown optimization method {method!r}.")
    if graph_level not in GRAPH_LEVELS:
        raise Refusal(f"The graph optimization level is basic or extended, not {graph_level!r}.")
    report: dict[str, Any] = {"method": method, "graph_level": graph_level, "steps": []}
    notes = []
    with tempfile.TemporaryDirectory(prefix="modeldeck-optimize-") as folder:
        work = Path(folder)
        graph = work / "graph.onnx"
        optimize_graph(source, graph, level=graph_level)
        report["steps"].append(f"onnxruntime graph optimizations ({graph_level})")
        if method == "int8":
            report.update(quantize_int8(graph, output, work))
            report["steps"].append("dynamic int8 quantization of the weights")
            if not float16_available():
                notes.append(
                    "float16 conversion is unavailable here (onnxconverter-common is not "
                    "installed)."
                )
        else:
            report.update(convert_float16(graph, output))
            report["steps"].append("float16 weights (inputs and outputs stay float32)")
    _drop_unused_opsets(output)
    try:
        onnx.checker.check_model(str(output), full_check=True)
    except Exception as error:
        raise Refusal(f"The optimized model fails the ONNX checker: {_short(error)}") from None
    original_size, optimized_size = source.stat().st_size, output.stat().st_size
    report["size"] = {
        "source": original_size,
        "optimized": optimized_size,
        "ratio": round(optimized_size / original_size, 4),
    }
    if optimized_size >= original_size:
        raise Refusal(
            f"The {method} version would not be smaller ({optimized_size:,} bytes against "
            f"{original_size:,}): the model's weights are too small for this to pay off. "
            "Nothing was registered.",
            report,
        )
    report.update(
        measure(
            source,
            output,
            method=method,
            signature=signature,
            reference_path=reference_path,
            reference_rows=reference_rows,
        )
    )
    report["notes"] = notes + report.get("notes", [])
    return report


def main(argv: list[str] | None = None) -> int:
    """The child's entry point: limits first, then the steps, one JSON object on stdout."""
    parser = argparse.ArgumentParser(prog="python -m registry.optimize")
    parser.add_argument("source", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--method", required=True)
    parser.add_argument("--signature", required=True)
    parser.add_argument("--graph-level", default="basic")
    parser.add_argument("--reference", type=Path)
    parser.add_argument("--reference-rows", type=int, default=1_000)
    parser.add_argument("--memory-bytes", type=int, default=0)
    parser.add_argument("--cpu-seconds", type=int, default=0)
    args = parser.parse_args(argv)
    if args.memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (args.memory_bytes, args.memory_bytes))
    if args.cpu_seconds:
        resource.setrlimit(resource.RLIMIT_CPU, (args.cpu_seconds, args.cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    result_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        report = optimize_file(
            args.source,
            args.output,
            method=args.method,
            signature=json.loads(args.signature),
            graph_level=args.graph_level,
            reference_path=args.reference,
            reference_rows=args.reference_rows,
        )
        outcome = {"ok": True, "report": report}
    except Refusal as refusal:
        outcome = {"ok": False, "reason": refusal.message, "report": refusal.report}
    except MemoryError:
        outcome = {"ok": False, "reason": "Optimizing needed more memory than the limit."}
    except Exception as error:
        outcome = {
            "ok": False,
            "reason": f"Optimizing failed unexpectedly: {type(error).__name__}: {_short(error)}",
        }
    with os.fdopen(result_fd, "w") as out:
        out.write(json.dumps(outcome))
    return 0


def run_in_child(
    source: Path,
    output: Path,
    *,
    method: str,
    signature: dict,
    reference_path: Path | None = None,
    graph_level: str = "basic",
    reference_rows: int = 1_000,
    timeout_seconds: int = 600,
    memory_bytes: int = 0,
) -> dict[str, Any]:
    """Optimize in a fresh Python process; never raises for a model that breaks the child."""
    arguments = [
        str(Path(source).resolve()),
        str(Path(output).resolve()),
        "--method",
        method,
        "--signature",
        json.dumps(signature),
        "--graph-level",
        graph_level,
        "--reference-rows",
        str(reference_rows),
        "--memory-bytes",
        str(memory_bytes),
        "--cpu-seconds",
        str(timeout_seconds + 1),
    ]
    if reference_path is not None:
        arguments += ["--reference", str(Path(reference_path).resolve())]
    child = sandbox.run_child("registry.optimize", *arguments, timeout_seconds=timeout_seconds)
    if child.timed_out:
        return {"ok": False, "reason": f"Optimizing took longer than {timeout_seconds} s."}
    try:
        return json.loads(child.stdout.decode("utf-8"))
    except ValueError:
        tail = " ".join(child.stderr_tail[-4000:].decode("utf-8", "replace").split())[-400:]
        if child.returncode < 0:
            return {
                "ok": False,
                "reason": f"The optimizing process was stopped by signal {-child.returncode}, "
                "most likely for needing more memory than the limit.",
            }
        return {
            "ok": False,
            "reason": f"The optimizing process failed (exit code {child.returncode}): {tail}",
        }


if __name__ == "__main__":
    sys.exit(main())
