"""Checks one ONNX file in a child process with memory and time limits.

Run as `python -m registry.validation MODEL_PATH --root FOLDER --memory-bytes N
--cpu-seconds S [--reference CSV]`; it prints one JSON object: `{"ok": true, "signature": …,
"report": …, "smoke": …}` or `{"ok": false, "reason": "…", "check": "…", "report": …}`.

The smoke inference runs on the version's reference rows when it has a reference CSV that fits
its inputs (a failure there makes the version invalid), else on generated zeros: valid models
whose inputs must lie in a domain (a category encoder, a size fed to Range) fail on zeros, so a
failure there only warns (`SMOKE_WARNING`) once the model has loaded and passed the graph checks.

A hostile or broken model can only crash or exhaust this child; `run_in_child` turns every way
it can end into a readable outcome.

This module must not import Django: the child starts fast and sees nothing of the web process
(the parent passes it a minimal environment without secrets).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from modeldeck_runtime.protocol import ONNX_TYPE_TO_DATATYPE

from registry import sandbox

ALLOWED_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
MIN_DEFAULT_OPSET = 7

# Element sizes in bits by TensorProto data type, so 4-bit types count right.
_ELEMENT_BITS = {
    1: 32,
    2: 8,
    3: 8,
    4: 16,
    5: 16,
    6: 32,
    7: 64,
    9: 8,
    10: 16,
    11: 64,
    12: 32,
    13: 64,
    14: 64,
    15: 128,
    16: 16,
    17: 8,
    18: 8,
    19: 8,
    20: 8,
    21: 4,
    22: 4,
    23: 4,
    24: 8,
    25: 2,
    26: 2,
}
_STRING = 8
# The typed field that holds each data type's values when raw_data is not used.
_TYPED_FIELDS = {
    1: ("float_data", 1),
    14: ("float_data", 2),
    11: ("double_data", 1),
    15: ("double_data", 2),
    7: ("int64_data", 1),
    12: ("uint64_data", 1),
    13: ("uint64_data", 1),
}


SMOKE_WARNING = (
    "smoke input outside the model's domain; upload a reference CSV to smoke-test with real rows"
)
# The most reference rows a smoke run (and smoke.json for the version servers) uses.
SMOKE_ROWS = 8
SMOKE_FILE = "smoke.json"
# Rows of a reference CSV looked at for good ones: a huge file of bad rows must not eat the
# validation's time limit.
SMOKE_SCAN_ROWS = 1_000


class Refusal(Exception):
    """The model fails one check; the message is shown to people as it is."""

    def __init__(self, check: str, message: str):
        super().__init__(message)
        self.check = check
        self.message = message


def format_bytes(size: float) -> str:
    """A size as people read it."""
    if size < 1024:
        return f"{int(size)} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        size /= 1024
        if size < 1024 or unit == "PiB":
            return f"{size:.1f} {unit}".replace(".0 ", " ")
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------------------------
# The checks (child side).


def _all_graphs(model) -> list:
    """The main graph, every subgraph (If/Loop/Scan bodies) and every function body."""
    import onnx

    graphs, pending = [], [model.graph]
    while pending:
        graph = pending.pop()
        graphs.append(graph)
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    pending.append(attribute.g)
                elif attribute.type == onnx.AttributeProto.GRAPHS:
                    pending.extend(attribute.graphs)
    return graphs


def _all_nodes(model) -> list:
    nodes = [node for graph in _all_graphs(model) for node in graph.node]
    return nodes + [node for function in model.functions for node in function.node]


def _all_tensors(model) -> list[tuple[str, Any]]:
    """Every stored tensor: initializers, sparse initializers, and tensors inside attributes."""
    import onnx

    tensors = []
    for graph in _all_graphs(model):
        tensors += [(t.name or "(unnamed)", t) for t in graph.initializer]
        for sparse in graph.sparse_initializer:
            tensors += [(sparse.values.name, sparse.values), (sparse.indices.name, sparse.indices)]
    for node in _all_nodes(model):
        for attribute in node.attribute:
            label = f"attribute '{attribute.name}' of node '{node.name or node.op_type}'"
            if attribute.type == onnx.AttributeProto.TENSOR:
                tensors.append((label, attribute.t))
            elif attribute.type == onnx.AttributeProto.TENSORS:
                tensors += [(label, t) for t in attribute.tensors]
            elif attribute.type == onnx.AttributeProto.SPARSE_TENSOR:
                tensors += [
                    (label, attribute.sparse_tensor.values),
                    (label, attribute.sparse_tensor.indices),
                ]
    return tensors


def check_opsets(model) -> dict[str, int]:
    """The default domain's opset must be one onnxruntime supports; domains must be allowed."""
    import onnx

    opsets = {(entry.domain or "ai.onnx"): entry.version for entry in model.opset_import}
    local = {function.domain for function in model.functions}
    newest = onnx.defs.onnx_opset_version()
    default = opsets.get("ai.onnx")
    if default is not None and not MIN_DEFAULT_OPSET <= default <= newest:
        raise Refusal(
            "opset",
            f"The model uses opset {default} of the default ONNX domain; Modeldeck supports "
            f"opsets {MIN_DEFAULT_OPSET} to {newest}. Re-export it with a supported opset.",
        )
    for domain in opsets:
        if domain not in ALLOWED_DOMAINS and domain not in local:
            raise Refusal("operator-domains", _domain_message(domain))
    return opsets


def _domain_message(domain: str, op_type: str = "") -> str:
    subject = f"Operator '{op_type}' comes from" if op_type else "The model imports"
    allowed = ", ".join(repr(d or "ai.onnx") for d in ALLOWED_DOMAINS[1:])
    return (
        f"{subject} the operator domain '{domain}', which needs a custom-operator library; "
        f"Modeldeck loads none. Allowed domains: the default ONNX domain, {allowed}."
    )


def check_operators(model) -> int:
    """Every node's operator comes from an allowed domain, or from a function in the model."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    local = {(function.domain, function.name) for function in model.functions}
    shipped = None
    nodes = _all_nodes(model)
    for node in nodes:
        if (node.domain, node.op_type) in local:
            continue
        if node.domain not in ALLOWED_DOMAINS:
            raise Refusal("operator-domains", _domain_message(node.domain, node.op_type))
        if node.domain == "com.microsoft":
            if shipped is None:
                shipped = {
                    schema.name
                    for schema in ort_state.get_all_operator_schema()
                    if schema.domain == "com.microsoft"
                }
            if node.op_type not in shipped:
                raise Refusal(
                    "operator-domains",
                    f"Operator '{node.op_type}' of domain 'com.microsoft' is not one that "
                    "onnxruntime ships; it would need a custom-operator library.",
                )
    return len(nodes)


def _external_location(name: str, tensor, root: Path) -> tuple[Path, int, int | None]:
    entries = {entry.key: entry.value for entry in tensor.external_data}
    location = entries.get("location", "")
    where = f"Tensor '{name}' keeps its data in an external file"
    if not location or "\x00" in location:
        raise Refusal("external-data", f"{where} without a usable location.")
    posix, windows = PurePosixPath(location), PureWindowsPath(location)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or location.startswith("~"):
        raise Refusal(
            "external-data",
            f"{where} at an absolute path ({location[:200]!r}); only files next to "
            "the model, inside its own folder, are allowed.",
        )
    if ".." in posix.parts or ".." in windows.parts:
        raise Refusal("external-data", f"{where} outside the model's folder ({location[:200]!r}).")
    resolved = (root / location).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise Refusal(
            "external-data",
            f"{where} that resolves outside the model's folder ({location[:200]!r}).",
        )
    if not resolved.is_file():
        raise Refusal(
            "external-data", f"{where} ({location[:200]!r}) that was not uploaded with it."
        )
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries["length"]) if "length" in entries else None
    except ValueError:
        raise Refusal(
            "external-data", f"{where} with an offset or length that is not a number."
        ) from None
    size = resolved.stat().st_size
    if offset < 0 or (length is not None and length < 0) or offset + (length or 0) > size:
        raise Refusal("external-data", f"{where} whose offset and length run past its end.")
    return resolved, offset, length if length is not None else size - offset


def _stored_bytes(tensor, name: str, root: Path) -> tuple[int, int]:
    """(bytes stored, values stored); values are what typed fields count."""
    import onnx

    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        _path, _offset, length = _external_location(name, tensor, root)
        return length, -1
    if tensor.HasField("raw_data") or tensor.raw_data:
        return len(tensor.raw_data), -1
    if tensor.data_type == _STRING:
        return sum(len(value) for value in tensor.string_data), len(tensor.string_data)
    field, per_value = _TYPED_FIELDS.get(tensor.data_type, ("int32_data", 1))
    count = len(getattr(tensor, field))
    return count, count // per_value


def check_tensors(model, *, root: Path, max_bytes: int) -> int:
    """Declared sizes must match the stored bytes and fit the cap, before anything allocates.

    A tiny file may declare a tensor of billions of elements; catching that here keeps
    onnxruntime from trying to allocate it.
    """
    total = 0
    for name, tensor in _all_tensors(model):
        dims = list(tensor.dims)
        if any(dim < 0 for dim in dims):
            raise Refusal("tensor-sizes", f"Tensor '{name}' declares a negative dimension.")
        elements = math.prod(dims)
        bits = _ELEMENT_BITS.get(tensor.data_type)
        stored, values = _stored_bytes(tensor, name, root)
        if tensor.data_type == _STRING:
            if values != elements:
                raise Refusal(
                    "tensor-sizes",
                    f"Tensor '{name}' declares {elements:,} strings but holds {values:,}.",
                )
            total += stored
            continue
        if bits is None:
            raise Refusal(
                "tensor-sizes", f"Tensor '{name}' has unknown data type {tensor.data_type}."
            )
        declared = (elements * bits + 7) // 8
        consistent = stored == declared if values < 0 else values == elements
        if not consistent and not (elements == 0 and stored == 0):
            held = f"{format_bytes(stored)}" if values < 0 else f"{values:,} values"
            raise Refusal(
                "tensor-sizes",
                f"Tensor '{name}' declares shape {dims} ({format_bytes(declared)}) but holds "
                f"{held}; the file is corrupt or crafted.",
            )
        if declared > max_bytes:
            raise Refusal(
                "tensor-sizes",
                f"Tensor '{name}' declares shape {dims} ({format_bytes(declared)}), more than "
                f"the validation limit of {format_bytes(max_bytes)}.",
            )
        total += declared
        if total > max_bytes:
            raise Refusal(
                "tensor-sizes",
                f"The model's tensors need more than the validation limit of "
                f"{format_bytes(max_bytes)}.",
            )
    return total


def _readable_type(onnx_type: str) -> str:
    """`seq(map(int64,tensor(float)))` → `seq(map(int64, float))`."""
    import re

    readable = re.sub(r"tensor\((\w+)\)", r"\1", onnx_type)
    return readable.replace(",", ", ")


def _describe(node, *, is_input: bool) -> dict:
    shape = node.shape if isinstance(node.shape, list) else []
    if node.type in ONNX_TYPE_TO_DATATYPE:
        return {
            "name": node.name,
            "datatype": ONNX_TYPE_TO_DATATYPE[node.type],
            "shape": [dim if isinstance(dim, int) and dim >= 0 else -1 for dim in shape],
        }
    kind = "input" if is_input else "output"
    if is_input:
        raise Refusal(
            "signature",
            f"The model's {kind} '{node.name}' has type {_readable_type(node.type)}; the "
            "inference protocol can only send tensors of numbers, booleans or strings.",
        )
    # Non-tensor outputs (sklearn's ZipMap probabilities) travel as JSON strings.
    return {
        "name": node.name,
        "datatype": "BYTES",
        "shape": [-1],
        "type": _readable_type(node.type),
    }


def _smoke_feeds(signature: dict):
    import numpy as np

    feeds = {}
    for spec in signature["inputs"]:
        shape = tuple(1 if dim < 0 else dim for dim in spec["shape"])
        if spec["datatype"] == "BYTES":
            feeds[spec["name"]] = np.full(shape, "a", dtype=object)
        else:
            feeds[spec["name"]] = np.zeros(shape, dtype=sandbox.NUMPY_DTYPES[spec["datatype"]])
    return feeds


def reference_feeds(reference: Path, signature: dict, *, rows: int = SMOKE_ROWS):
    """Feeds from the first good rows of a reference CSV (at most `rows`; exactly the fixed
    batch size when an input has one), or None when the file does not fit the inputs."""
    from registry import batch

    try:
        header, reader = batch.read_csv(reference, max_cell_chars=batch.MAX_CELL_CHARS)
        plan = batch.plan_columns(header, signature)
    except (batch.Refusal, OSError, ValueError):
        return None
    fixed = {spec["shape"][0] for spec in signature["inputs"] if spec["shape"][0] >= 0}
    if len(fixed) > 1:
        return None
    exact = bool(fixed)
    wanted = fixed.pop() if exact else rows
    good: list = []
    try:
        for scanned, (_number, cells) in enumerate(reader):
            if scanned >= SMOKE_SCAN_ROWS:
                break
            if isinstance(cells, str) or len(cells) != len(plan.header):
                continue
            try:
                batch.tensors_for(plan, [cells])
            except ValueError:
                continue
            good.append(cells)
            if len(good) >= wanted:
                break
    finally:
        reader.close()
    if not good or (exact and len(good) != wanted):
        return None
    return batch.tensors_for(plan, good)


def inference_request(feeds: dict, signature: dict) -> dict:
    """The feeds as an Open Inference Protocol request body (what `smoke.json` holds)."""
    datatypes = {spec["name"]: spec["datatype"] for spec in signature["inputs"]}
    return {
        "inputs": [
            {
                "name": name,
                "datatype": datatypes[name],
                "shape": list(array.shape),
                "data": [str(value) for value in array.ravel()]
                if datatypes[name] == "BYTES"
                else array.ravel().tolist(),
            }
            for name, array in feeds.items()
        ]
    }


def write_smoke_file(folder: Path, smoke_input: dict | None) -> None:
    """Put `smoke.json` (the version's reference-row request) into a model folder handed to a
    version server, or remove a stale one; the server's start-up smoke uses it when present."""
    target = folder / SMOKE_FILE
    if smoke_input:
        temporary = folder / f".{SMOKE_FILE}.{os.getpid()}"
        temporary.write_text(json.dumps(smoke_input))
        os.replace(temporary, target)
    elif target.exists():
        target.unlink()


def smoke_file_bytes(smoke_input: dict | None) -> bytes | None:
    """The content of `smoke.json` for an image's model folder, or None without one."""
    return json.dumps(smoke_input).encode() if smoke_input else None


def _run_timed(session, feeds) -> list[float]:
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        session.run(None, feeds)
        timings.append((time.perf_counter() - started) * 1000)
    return sorted(timings)


def check_session(path: Path, reference: Path | None = None) -> tuple[dict, dict, dict]:
    """Create an onnxruntime session, read the signature, run a smoke inference on reference
    rows (failure refuses) or generated zeros (failure warns). Returns (signature, timings,
    smoke) where smoke = {"source", "rows", "warning", "request"}."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    started = time.perf_counter()
    try:
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:
        if _is_out_of_memory(error):
            raise MemoryError from None
        raise Refusal("session", f"onnxruntime cannot load the model: {_short(error)}") from None
    load_ms = (time.perf_counter() - started) * 1000
    signature = {
        "inputs": [_describe(node, is_input=True) for node in session.get_inputs()],
        "outputs": [_describe(node, is_input=False) for node in session.get_outputs()],
    }
    feeds = reference_feeds(reference, signature) if reference is not None else None
    if feeds is not None:
        try:
            timings = _run_timed(session, feeds)
        except Exception as error:
            if _is_out_of_memory(error):
                raise MemoryError from None
            raise Refusal(
                "smoke-inference",
                f"The model failed a test inference on its reference rows: {_short(error)}",
            ) from None
        rows = len(next(iter(feeds.values()))) if feeds else 0
        smoke = {
            "source": "reference",
            "rows": rows,
            "warning": "",
            "request": inference_request(feeds, signature),
        }
        return signature, _timings(load_ms, timings), smoke
    try:
        timings = _run_timed(session, _smoke_feeds(signature))
    except Exception as error:
        if _is_out_of_memory(error):
            raise MemoryError from None
        # The model loaded and passed the graph checks: zeros may just lie outside its domain.
        smoke = {
            "source": "zeros",
            "rows": 1,
            "warning": SMOKE_WARNING,
            "error": f"The test inference on generated inputs failed: {_short(error)}",
            "request": None,
        }
        return signature, {"load_time_ms": round(load_ms, 3)}, smoke
    smoke = {"source": "zeros", "rows": 1, "warning": "", "request": None}
    return signature, _timings(load_ms, timings), smoke


def _timings(load_ms: float, timings: list[float]) -> dict:
    return {"load_time_ms": round(load_ms, 3), "latency_ms": round(timings[1], 3)}


_OUT_OF_MEMORY_SIGNS = (
    "bad_alloc",
    "bad allocation",
    "failed to allocate",
    "bfc_arena",
    "out of memory",
    "memoryerror",
)


def _is_out_of_memory(error: BaseException) -> bool:
    """onnxruntime reports a refused allocation as an ordinary error; recognise it."""
    text = str(error).lower()
    return isinstance(error, MemoryError) or any(sign in text for sign in _OUT_OF_MEMORY_SIGNS)


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split())
    # onnxruntime prefixes messages with its source location; people need the rest.
    if "] : " in text[:80]:
        text = text.split("] : ", 1)[1]
    return text[:600] or type(error).__name__


def _check_ir3_initializers(path: Path) -> None:
    """IR 3 wanted every initializer listed as a graph input, a rule later IR versions dropped
    and onnxruntime never enforced; check such a model as if they were listed."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    listed = {value.name for value in model.graph.input}
    for tensor in model.graph.initializer:
        if tensor.name not in listed:
            model.graph.input.append(
                onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims)
            )
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as error:
        raise Refusal(
            "onnx-checker", f"The ONNX checker refuses the model: {_short(error)}"
        ) from None


def check_file(
    path: Path, *, root: Path, max_tensor_bytes: int, reference: Path | None = None
) -> dict:
    """Run every check in order; returns the outcome dictionary the parent expects."""
    import onnx

    report: dict[str, Any] = {"file_size": path.stat().st_size, "checks": []}
    passed = report["checks"]
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:
        if _is_out_of_memory(error):
            raise MemoryError from None
        raise Refusal("parse", f"The file is not a valid ONNX model: {_short(error)}") from None
    passed.append("parse")
    report.update(
        ir_version=model.ir_version,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        opsets=check_opsets(model),
    )
    passed.append("opset")
    report["nodes"] = check_operators(model)
    passed.append("operator-domains")
    report["tensor_bytes"] = check_tensors(model, root=root, max_bytes=max_tensor_bytes)
    passed += ["external-data", "tensor-sizes"]
    ir_version = model.ir_version
    del model
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as error:
        if _is_out_of_memory(error):
            raise MemoryError from None
        if not (ir_version <= 3 and "in initializer but not in graph input" in str(error)):
            raise Refusal(
                "onnx-checker", f"The ONNX checker refuses the model: {_short(error)}"
            ) from None
        _check_ir3_initializers(path)
        report["notes"] = [
            "IR version 3 model with initializers outside the graph inputs; "
            "accepted as onnxruntime accepts it."
        ]
    passed.append("onnx-checker")
    signature, timings, smoke = check_session(path, reference)
    passed += ["session", "signature"]
    if not smoke["warning"]:
        passed.append("smoke-inference")
    report.update(timings)
    report["smoke"] = {
        key: smoke[key] for key in ("source", "rows", "warning", "error") if key in smoke
    }
    import onnxruntime

    report.update(onnx_version=onnx.__version__, onnxruntime_version=onnxruntime.__version__)
    return {"ok": True, "signature": signature, "report": report, "smoke": smoke}


def _limit_resources(memory_bytes: int, cpu_seconds: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (sandbox.OUTPUT_CAP * 16, sandbox.OUTPUT_CAP * 16))


def _memory_reason(memory_bytes: int) -> str:
    return (
        f"The model needs more memory than the validation limit of {format_bytes(memory_bytes)} "
        "to load or run."
    )


def main(argv: list[str] | None = None) -> int:
    """The child's entry point: limits first, checks next, one JSON line on the real stdout."""
    parser = argparse.ArgumentParser(prog="python -m registry.validation")
    parser.add_argument("path", type=Path)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--memory-bytes", type=int, required=True)
    parser.add_argument("--cpu-seconds", type=int, required=True)
    parser.add_argument("--reference", type=Path, default=None)
    args = parser.parse_args(argv)
    _limit_resources(args.memory_bytes, args.cpu_seconds)
    # Native code may print; only our JSON goes to the parent's stdout.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        outcome = check_file(
            args.path,
            root=args.root,
            max_tensor_bytes=args.memory_bytes,
            reference=args.reference,
        )
    except Refusal as refusal:
        outcome = {"ok": False, "check": refusal.check, "reason": refusal.message}
    except MemoryError:
        outcome = {"ok": False, "check": "memory", "reason": _memory_reason(args.memory_bytes)}
    except Exception as error:
        if _is_out_of_memory(error):
            outcome = {"ok": False, "check": "memory", "reason": _memory_reason(args.memory_bytes)}
        else:
            outcome = {
                "ok": False,
                "check": "internal",
                "reason": "Validation failed "
                f"unexpectedly: {type(error).__name__}: {_short(error)}",
            }
    with os.fdopen(result_fd, "w") as out:
        out.write(json.dumps(outcome))
    return 0


# ----------------------------------------------------------------------------------------------
# Running the child (parent side).


@dataclass(frozen=True)
class Outcome:
    """How validation ended, in terms the version row stores."""

    ok: bool
    reason: str
    signature: dict
    report: dict
    # Shown on a ready version whose smoke inference on zeros failed (SMOKE_WARNING).
    smoke_warning: str = ""
    # The reference-row request the smoke inference passed with (smoke.json), or None.
    smoke_input: dict | None = None


def _signal_reason(number: int, *, memory_bytes: int, cpu_seconds: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    if number == signal.SIGKILL:
        return (
            f"The validation process was killed ({name}), most likely because the model "
            f"needs more memory than the limit of {format_bytes(memory_bytes)}."
        )
    if number == signal.SIGXCPU:
        return f"Checking the model used more than {cpu_seconds} seconds of CPU time."
    if number in (signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS):
        return (
            f"onnxruntime crashed ({name}) while checking this model; it may be corrupt, "
            f"or need more memory than the limit of {format_bytes(memory_bytes)}."
        )
    return f"The validation process was stopped by {name}."


def outcome_from_process(
    returncode: int, stdout: bytes, stderr: bytes, *, memory_bytes: int, cpu_seconds: int
) -> Outcome:
    """Turn however the child ended into an Outcome a person can read."""
    if returncode < 0:
        reason = _signal_reason(-returncode, memory_bytes=memory_bytes, cpu_seconds=cpu_seconds)
        return Outcome(False, reason, {}, {"check": "crash"})
    try:
        result = json.loads(stdout.decode("utf-8"))
        ok = bool(result["ok"])
    except (ValueError, KeyError, TypeError):
        tail = " ".join(stderr.decode("utf-8", "replace").split())[-400:]
        if "MemoryError" in tail:
            return Outcome(False, _memory_reason(memory_bytes), {}, {"check": "memory"})
        reason = f"The validation process failed (exit code {returncode})"
        return Outcome(False, f"{reason}: {tail}" if tail else f"{reason}.", {}, {"check": "crash"})
    report = result.get("report") or {}
    if not ok:
        report = {**report, "check": result.get("check", "")}
    smoke = result.get("smoke") if ok and isinstance(result.get("smoke"), dict) else {}
    request = smoke.get("request")
    return Outcome(
        ok,
        "" if ok else str(result.get("reason", "")),
        result.get("signature") or {},
        report,
        smoke_warning=str(smoke.get("warning") or "")[:500],
        smoke_input=request if isinstance(request, dict) else None,
    )


def run_in_child(
    path: Path,
    *,
    root: Path,
    timeout_seconds: int,
    memory_bytes: int,
    reference: Path | None = None,
) -> Outcome:
    """Validate `path` in a fresh Python process with the given limits (smoke-testing on the
    rows of `reference`, a CSV, when given); never raises for a bad model, whatever it does to
    the child."""
    extra = ["--reference", str(reference)] if reference is not None else []
    child = sandbox.run_child(
        "registry.validation",
        str(path),
        "--root",
        str(root),
        "--memory-bytes",
        str(memory_bytes),
        "--cpu-seconds",
        str(timeout_seconds + 1),
        *extra,
        timeout_seconds=timeout_seconds,
    )
    if child.timed_out:
        reason = (
            f"Validation did not finish within {timeout_seconds} seconds; the model "
            "is too slow to load or to run one row."
        )
        return Outcome(False, reason, {}, {"check": "timeout"})
    return outcome_from_process(
        child.returncode,
        child.stdout,
        child.stderr_tail,
        memory_bytes=memory_bytes,
        cpu_seconds=timeout_seconds + 1,
    )


if __name__ == "__main__":
    sys.exit(main())
