"""Score a 1 000 000-row CSV with a batch job; print the scoring process's peak memory against
the file size, and check the results against onnxruntime run directly on the same rows.

    .venv/bin/python bench/batch_memory.py [--rows 1000000] [--chunk-rows 10000]

Writes an MLP (`x` [N, 4] → probabilities [N, 3], label [N]) and a CSV of --rows rows (an `id`
column and four features) into a temporary folder, then runs exactly what the Celery task runs:
`registry.batch.run_in_child`, the child process that streams the file chunk by chunk and writes
the result CSV, while this process relays its progress events (as the worker does, minus the
database). It prints:

- the input size and the child's peak resident memory (ru_maxrss), with their ratio — the
  anchor is the file size: the peak should stay a constant (onnxruntime + numpy + one chunk),
  far below the file, whatever the row count;
- the same for a 1 000-row file, so the growth attributable to the file is visible;
- rows per second, chunks, and whether every result row equals onnxruntime's output for the
  same input row (compared chunk by chunk, so this check is bounded in memory too).

It prints and never asserts; it is not part of the test suite.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from registry import batch  # noqa: E402

SIGNATURE = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]}


def mlp(path: Path) -> Path:
    rng = np.random.default_rng(3)
    w1 = (rng.normal(size=(4, 64)) / 2).astype(np.float32)
    w2 = (rng.normal(size=(64, 3)) / 8).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W1"], ["h"]),
            helper.make_node("Relu", ["h"], ["a"]),
            helper.make_node("MatMul", ["a", "W2"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3]),
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
        ],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def write_csv(path: Path, rows: int) -> Path:
    rng = np.random.default_rng(0)
    with open(path, "w") as out:
        out.write("id,f0,f1,f2,f3\n")
        for start in range(0, rows, 100_000):
            block = rng.normal(size=(min(100_000, rows - start), 4))
            ids = np.arange(start, start + len(block)).reshape(-1, 1)
            np.savetxt(out, np.hstack([ids, block]), fmt=["%d", *["%.9g"] * 4], delimiter=",")
    return path


def verify(model: Path, input_path: Path, result_path: Path, chunk: int = 50_000) -> tuple:
    """(rows compared, rows differing), reading both files chunk by chunk."""
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    compared = differing = 0
    with open(input_path) as inputs, open(result_path) as results:
        input_rows, result_rows = csv.reader(inputs), csv.reader(results)
        next(input_rows)
        header = next(result_rows)
        assert header == ["id", "probabilities_0", "probabilities_1", "probabilities_2", "label"]
        while True:
            block = [row for _, row in zip(range(chunk), input_rows, strict=False)]
            if not block:
                break
            got = [row for _, row in zip(range(len(block)), result_rows, strict=False)]
            features = np.array([row[1:] for row in block], dtype=np.float32)
            probabilities, labels = session.run(None, {"x": features})
            written = np.array([row[1:4] for row in got], dtype=np.float32)
            same = (
                np.all(written == probabilities, axis=1)
                & (np.array([int(row[4]) for row in got]) == labels)
                & (np.array([row[0] for row in got]) == np.array([row[0] for row in block]))
            )
            compared += len(block)
            differing += int((~same).sum())
    return compared, differing


def run(model: Path, input_path: Path, output: Path, chunk_rows: int) -> tuple[dict, float]:
    events = []
    started = time.perf_counter()
    outcome = batch.run_in_child(
        model,
        input_path,
        output,
        signature=SIGNATURE,
        chunk_rows=chunk_rows,
        on_event=lambda event: events.append(event.get("event")) or True,
    )
    return outcome, time.perf_counter() - started


def mib(size: float) -> str:
    return f"{size / 1024**2:,.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modeldeck-bench-batch-") as folder:
        root = Path(folder)
        model = mlp(root / "mlp.onnx")
        small = write_csv(root / "small.csv", 1_000)
        big = write_csv(root / "big.csv", args.rows)
        baseline, _ = run(model, small, root / "small-out.csv", args.chunk_rows)
        outcome, seconds = run(model, big, root / "big-out.csv", args.chunk_rows)
        if outcome["event"] != "done":
            print("batch job failed:", outcome)
            return
        size = big.stat().st_size
        peak, base = outcome["peak_rss_bytes"], baseline["peak_rss_bytes"]
        print(
            f"rows                      {outcome['rows_done']:,} ({outcome['chunks']} chunks "
            f"of ≤ {outcome['chunk_rows']:,})"
        )
        print(f"input CSV                 {mib(size)}")
        print(f"scoring child peak RSS    {mib(peak)}  = {peak / size:.2f}× the file")
        print(
            f"  same child, 1 000 rows  {mib(base)}  (growth with the file: {mib(peak - base)}"
            f", {(peak - base) / size:.3f}× the file)"
        )
        print(f"relaying process peak RSS {mib(batch.peak_rss_bytes())} (this script)")
        print(
            f"throughput                {outcome['rows_done'] / seconds:,.0f} rows/s "
            f"({seconds:.1f} s wall, child start included)"
        )
        compared, differing = verify(model, big, root / "big-out.csv")
        verdict = "all equal" if differing == 0 and compared == args.rows else "DIFFERENT"
        print(
            f"vs onnxruntime directly   {compared:,} rows compared, {differing} differ: {verdict}"
        )


if __name__ == "__main__":
    main()
