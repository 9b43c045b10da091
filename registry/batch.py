"""Scores a CSV (or Parquet) file with one ONNX model in chunks, in a child process.

Run as `python -m registry.batch MODEL INPUT OUTPUT --signature JSON …`; it prints one JSON
object per line on stdout: `{"event": "plan", …}` once, `{"event": "chunk", …}` after every
chunk, and finally `{"event": "done", …}` or `{"event": "failed", "reason": …}`. The parent
(the Celery task) turns those lines into progress in the database and may stop the child
between chunks to cancel.

Memory stays bounded whatever the file size: the input is read a line at a time (a line longer
than the cap is a bad row, never a huge string), at most `chunk_rows` rows are held at once, and
results are written out as each chunk is scored. Bad rows (wrong cell count, a cell that is not
of the input's type, a row the model refuses) are skipped and reported with their number and
why; only the first `max_errors` are kept, all are counted.

This module must not import Django: the child starts fast and sees nothing of the web process.
`plan_columns` is also used by the web process to refuse a file whose header does not fit.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import resource
import sys
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry import sandbox

MAX_COLUMNS = 1_000
MAX_CELL_CHARS = 10_000
MAX_HEADER_NAME = 200
# Cells held per chunk across all columns, so a wide file gets fewer rows per chunk.
CHUNK_CELL_BUDGET = 2_000_000
KEY_COLUMN_DEFAULTS = ("id", "key", "row_id")
ROW_COLUMN = "row"
_NUMPY_TYPES = sandbox.NUMPY_DTYPES
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


class Refusal(Exception):
    """The whole file cannot be scored; the message is shown to people as it is."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class RowError(Exception):
    """One row cannot be scored; the job goes on without it."""


# ---------------------------------------------------------------------------------------------
# Which columns feed which input.


@dataclass
class InputPlan:
    """One model input and the file's columns that fill it, in order."""

    name: str
    datatype: str
    columns: list[int]
    rank: int  # 1: [N], 2: [N, k]


@dataclass
class Plan:
    """How a file's columns map to the model: the key column, the inputs, what is ignored."""

    header: list[str]
    key_index: int | None
    inputs: list[InputPlan]
    ignored: list[str] = field(default_factory=list)

    @property
    def key_name(self) -> str:
        return self.header[self.key_index] if self.key_index is not None else ROW_COLUMN

    def describe(self) -> dict[str, Any]:
        return {
            "key_column": self.key_name,
            "inputs": {
                spec.name: [self.header[index] for index in spec.columns] for spec in self.inputs
            },
            "ignored_columns": self.ignored,
        }


def _shown(names: list[str], limit: int = 10) -> str:
    text = ", ".join(repr(name) for name in names[:limit])
    return text + (f" and {len(names) - limit} more" if len(names) > limit else "")


def clean_header(header: list[str]) -> list[str]:
    """Header names as compared with the signature; refuses what cannot be a header."""
    if not header or header == [""]:
        raise Refusal("The file is empty: the first line must name the columns.")
    if len(header) > MAX_COLUMNS:
        raise Refusal(f"The file has {len(header):,} columns; the limit is {MAX_COLUMNS:,}.")
    cleaned = [str(name).strip() for name in header]
    for position, name in enumerate(cleaned, start=1):
        if not name:
            raise Refusal(f"Column {position} has no name in the header line.")
        if len(name) > MAX_HEADER_NAME:
            raise Refusal(f"Column {position}'s name is longer than {MAX_HEADER_NAME} characters.")
        if any(unicodedata.category(char)[0] == "C" for char in name):
            raise Refusal(f"Column {position}'s name contains control characters.")
    seen = set()
    for name in cleaned:
        if name in seen:
            raise Refusal(f"The header names column {name!r} twice.")
        seen.add(name)
    return cleaned


def plan_columns(header: list[str], signature: dict, key_column: str = "") -> Plan:
    """Map the file's columns onto the signature's inputs, or refuse saying what is missing.

    One input of shape [N, k] takes every column but the key column, in order (the rule the
    reference CSV follows too). Otherwise each input takes the column of its name ([N] or
    [N, 1]) or the columns `name_0 … name_{k-1}` ([N, k]).
    """
    header = clean_header(header)
    inputs = signature.get("inputs") or []
    if not inputs:
        raise Refusal("The version has no signature yet; only ready versions can score files.")
    for spec in inputs:
        if spec.get("datatype") not in (*_NUMPY_TYPES, "BYTES"):
            raise Refusal(f"Input {spec.get('name')!r} has a type batch jobs cannot fill.")
        if len(spec.get("shape") or []) not in (1, 2):
            raise Refusal(
                f"Input {spec['name']!r} has shape {spec.get('shape')}; batch jobs score tabular "
                "models whose inputs are [N] or [N, k]."
            )
    key_index = None
    if key_column:
        if key_column not in header:
            raise Refusal(f"The key column {key_column!r} is not in the file's header.")
        key_index = header.index(key_column)
    else:
        input_names = {spec["name"] for spec in inputs}
        for candidate in KEY_COLUMN_DEFAULTS:
            if candidate in header and candidate not in input_names:
                key_index = header.index(candidate)
                break
    others = [index for index in range(len(header)) if index != key_index]
    key_note = f" besides the key column {header[key_index]!r}" if key_index is not None else ""
    if len(inputs) == 1 and len(inputs[0]["shape"]) == 2 and inputs[0]["name"] not in header:
        spec = inputs[0]
        width = spec["shape"][1]
        if width is not None and width >= 0 and len(others) != width:
            names = [header[index] for index in others]
            problem = "missing columns" if len(others) < width else "too many columns"
            raise Refusal(
                f"{problem.capitalize()}: the model's input {spec['name']!r} takes {width} "
                f"columns, in order; the file has {len(others)}{key_note}"
                f"{': ' + _shown(names) if names else ''}."
            )
        if not others:
            raise Refusal(f"The file has no feature columns{key_note}.")
        return Plan(header, key_index, [InputPlan(spec["name"], spec["datatype"], others, 2)])
    plans, missing = [], []
    used: set[int] = set()
    for spec in inputs:
        shape = spec["shape"]
        width = shape[1] if len(shape) == 2 else 1
        if len(shape) == 2 and width != 1:
            if width is None or width < 0:
                raise Refusal(
                    f"Input {spec['name']!r} has a dynamic width; with several inputs each needs "
                    "a fixed number of columns."
                )
            names = [f"{spec['name']}_{index}" for index in range(width)]
        else:
            names = [spec["name"]]
        absent = [name for name in names if name not in header]
        missing += absent
        if not absent:
            columns = [header.index(name) for name in names]
            used.update(columns)
            plans.append(InputPlan(spec["name"], spec["datatype"], columns, len(shape)))
    if missing:
        raise Refusal(
            f"Missing columns: the model needs {_shown(missing)}; the file's header has "
            f"{_shown(header)}."
        )
    ignored = [header[index] for index in others if index not in used]
    return Plan(header, key_index, plans, ignored)


# ---------------------------------------------------------------------------------------------
# Reading rows with bounded memory.


def _csv_lines(stream, *, max_line_chars: int, errors: list) -> Iterator[str]:
    """Lines of a text stream, never longer than the cap: an over-long line is skipped whole and
    remembered in `errors` (its data row number is filled in by the reader)."""
    while True:
        line = stream.readline(max_line_chars + 1)
        if not line:
            return
        if len(line) > max_line_chars and not line.endswith("\n"):
            while True:  # drop the rest of the line without holding it
                rest = stream.readline(1024 * 1024)
                if not rest or rest.endswith("\n"):
                    break
            errors.append(f"The line is longer than {max_line_chars:,} characters.")
            yield "\x00too-long\n"
            continue
        if "\x00" in line:
            errors.append("The line contains NUL bytes.")
            yield "\x00nul\n"
            continue
        yield line


def read_csv(path: Path, *, max_cell_chars: int, max_columns: int = MAX_COLUMNS):
    """(header, rows) where rows yields (row number, cells or an error message)."""
    stream = open(path, encoding="utf-8-sig", newline="", errors="strict")  # noqa: SIM115
    line_errors: list[str] = []
    lines = _csv_lines(
        stream, max_line_chars=max_cell_chars * max(max_columns, 1) + 1024, errors=line_errors
    )
    csv.field_size_limit(max_cell_chars)
    reader = csv.reader(lines, strict=False)
    try:
        header = next(reader)
    except StopIteration:
        stream.close()
        raise Refusal("The file is empty: the first line must name the columns.") from None
    except UnicodeDecodeError:
        stream.close()
        raise Refusal("The file is not UTF-8 text (nor Parquet).") from None
    except csv.Error as error:
        stream.close()
        raise Refusal(f"The header line cannot be read: {error}.") from None
    if line_errors:
        stream.close()
        raise Refusal(f"The header line cannot be read: {line_errors[0]}")

    def rows() -> Iterator[tuple[int, list | str]]:
        number = 0
        try:
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except UnicodeDecodeError:
                    number += 1
                    yield number, "The file is not UTF-8 text from here on; reading stopped."
                    return
                except csv.Error as error:
                    number += 1
                    yield number, f"The row cannot be read as CSV: {error}."
                    continue
                if not cells:
                    continue  # blank line
                number += 1
                if line_errors and cells and cells[0].startswith("\x00"):
                    yield number, line_errors.pop(0)
                    continue
                yield number, cells
        finally:
            stream.close()

    return header, rows()


def read_header(path: Path, *, parquet: bool) -> list[str]:
    """The column names of a file, read without loading it (the web process checks these)."""
    if parquet:
        header, _rows, _total = read_parquet(path, batch_rows=1)
        return header
    limit = MAX_CELL_CHARS * 8
    try:
        with open(path, encoding="utf-8-sig", newline="") as stream:
            line = stream.readline(limit + 1)
    except UnicodeDecodeError:
        raise Refusal("The file is neither UTF-8 CSV text nor Parquet.") from None
    if len(line) > limit:
        raise Refusal(f"The header line is longer than {limit:,} characters.")
    if "\x00" in line:
        raise Refusal("The file contains NUL bytes; it is neither CSV text nor Parquet.")
    try:
        header = next(csv.reader([line]), [])
    except csv.Error as error:
        raise Refusal(f"The header line cannot be read: {error}.") from None
    return header


def read_parquet(path: Path, *, batch_rows: int):
    """(header, rows, row count) of a Parquet file, read one record batch at a time."""
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise Refusal("Parquet files need pyarrow, which is not installed here.") from None
    try:
        file = parquet.ParquetFile(str(path))
    except Exception as error:
        raise Refusal(f"The Parquet file cannot be read: {_short(error)}") from None
    header = list(file.schema_arrow.names)

    def rows() -> Iterator[tuple[int, list | str]]:
        number = 0
        try:
            for batch in file.iter_batches(batch_size=batch_rows):
                columns = [column.to_pylist() for column in batch.columns]
                for cells in zip(*columns, strict=True):
                    number += 1
                    yield number, ["" if cell is None else cell for cell in cells]
        except Exception as error:
            number += 1
            yield number, f"The Parquet file cannot be read from here on: {_short(error)}"

    return header, rows(), file.metadata.num_rows


def is_parquet(path: Path) -> bool:
    """Parquet files start and end with the magic bytes PAR1."""
    with open(path, "rb") as stream:
        if stream.read(4) != b"PAR1":
            return False
        stream.seek(-4, os.SEEK_END)
        return stream.read(4) == b"PAR1"


def count_lines(path: Path) -> int:
    """Data rows in a CSV, estimated from newlines (quoted newlines make it an overestimate)."""
    count, last = 0, b"\n"
    with open(path, "rb") as stream:
        while block := stream.read(1024 * 1024):
            count += block.count(b"\n")
            last = block[-1:]
    if last != b"\n":
        count += 1
    return max(count - 1, 0)


# ---------------------------------------------------------------------------------------------
# Cells to tensors, tensors to cells.


def _convert(cells: list, datatype: str):
    """A numpy array of `cells` as the input's type; ValueError naming the first bad cell."""
    import numpy as np

    if datatype == "BYTES":
        return np.array([str(cell) for cell in cells], dtype=object)
    if datatype == "BOOL":
        values = []
        for cell in cells:
            text = str(cell).strip().lower()
            if text in _TRUE:
                values.append(True)
            elif text in _FALSE:
                values.append(False)
            else:
                raise ValueError(f"{_cell(cell)} is not a boolean (true/false, 1/0)")
        return np.array(values, dtype=bool)
    dtype = _NUMPY_TYPES[datatype]
    try:
        return np.array(cells, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        pass
    kind = "a number" if datatype.startswith("FP") else f"an integer ({datatype})"
    for cell in cells:
        try:
            np.array([cell], dtype=dtype)
        except (ValueError, TypeError, OverflowError):
            if isinstance(cell, str) and not cell.strip():
                raise ValueError("an empty cell where a value is needed") from None
            raise ValueError(f"{_cell(cell)} is not {kind}") from None
    raise ValueError(f"the cells are not {kind}")


def _cell(value: Any) -> str:
    text = str(value)
    return repr(text if len(text) <= 40 else text[:40] + "…")


def tensors_for(plan: Plan, rows: list[list]) -> dict[str, Any]:
    """The model's feeds for a list of rows (each a list of cells); ValueError when one is bad."""
    feeds = {}
    for spec in plan.inputs:
        if spec.rank == 1:
            values = [row[spec.columns[0]] for row in rows]
            array = _convert(values, spec.datatype)
        else:
            values = [row[index] for row in rows for index in spec.columns]
            array = _convert(values, spec.datatype).reshape(len(rows), len(spec.columns))
        feeds[spec.name] = array
    return feeds


def _row_feeds(plan: Plan, cells: list) -> dict[str, Any]:
    """One row's feeds, with a message naming the column when a cell is bad."""
    for spec in plan.inputs:
        for index in spec.columns:
            try:
                _convert([cells[index]], spec.datatype)
            except ValueError as error:
                raise RowError(f"Column {plan.header[index]!r}: {error}.") from None
    return tensors_for(plan, [cells])


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def output_columns(names: list[str], results: list) -> list[tuple[str, str, int]]:
    """(column name, output name, index or -1 for JSON) for each result column."""
    columns = []
    for name, result in zip(names, results, strict=True):
        shape = getattr(result, "shape", None)
        if shape is not None and (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            columns.append((name, name, 0))
        elif shape is not None and len(shape) == 2 and shape[1] <= MAX_COLUMNS:
            columns += [(f"{name}_{index}", name, index) for index in range(shape[1])]
        else:
            columns.append((name, name, -1))
    return columns


def result_rows(columns, names: list[str], results: list, count: int) -> Iterator[list]:
    """Per row, the output cells in the order of `columns`."""
    by_name = dict(zip(names, results, strict=True))
    prepared = {}
    for name, result in by_name.items():
        shape = getattr(result, "shape", None)
        if shape is not None and len(shape) <= 2:
            prepared[name] = result.reshape(count, -1).tolist()
        else:
            prepared[name] = [json.dumps(_jsonable(item)) for item in result]
    for row in range(count):
        cells = []
        for _column, name, index in columns:
            value = prepared[name][row]
            if index < 0:
                cells.append(value if isinstance(value, str) else json.dumps(_jsonable(value)))
            else:
                item = value[index]
                cells.append(item.decode("utf-8", "replace") if isinstance(item, bytes) else item)
        yield cells


# ---------------------------------------------------------------------------------------------
# The scoring loop.


@dataclass
class Tally:
    """Counts and the first errors of one run."""

    max_errors: int
    rows_done: int = 0
    rows_failed: int = 0
    errors: list = field(default_factory=list)
    new_errors: list = field(default_factory=list)

    def fail(self, row: int, reason: str) -> None:
        self.rows_failed += 1
        if len(self.errors) < self.max_errors:
            entry = {"row": row, "reason": reason[:500]}
            self.errors.append(entry)
            self.new_errors.append(entry)


def open_session(model_path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(
        str(model_path), options, providers=["CPUExecutionProvider"]
    )


def score_file(
    model_path: Path,
    input_path: Path,
    output_path: Path,
    *,
    signature: dict,
    key_column: str = "",
    chunk_rows: int = 10_000,
    max_errors: int = 100,
    max_cell_chars: int = MAX_CELL_CHARS,
    emit=lambda event: None,
) -> dict[str, Any]:
    """Score every row of `input_path`, writing `output_path`; returns the final counts.

    `emit` receives the plan, one event per chunk and nothing else; a Refusal means the file
    as a whole cannot be scored.
    """
    parquet = is_parquet(input_path)
    if parquet:
        header, rows, total = read_parquet(input_path, batch_rows=max(1, min(chunk_rows, 65_536)))
    else:
        header, rows = read_csv(input_path, max_cell_chars=max_cell_chars)
        total = count_lines(input_path)
    plan = plan_columns(header, signature, key_column)
    width = len(plan.header)
    chunk_rows = max(1, min(chunk_rows, CHUNK_CELL_BUDGET // width))
    emit(
        {
            "event": "plan",
            "rows_total": total,
            "format": "parquet" if parquet else "csv",
            "chunk_rows": chunk_rows,
            **plan.describe(),
        }
    )
    try:
        session = open_session(model_path)
    except Exception as error:
        raise Refusal(f"onnxruntime cannot load the model: {_short(error)}") from None
    names = [output.name for output in session.get_outputs()]
    tally = Tally(max_errors=max_errors)
    started = time.perf_counter()
    chunks = 0
    with open(output_path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        state = {"columns": None}
        chunk: list[tuple[int, list]] = []
        for number, cells in rows:
            if not isinstance(cells, str) and len(cells) != width:
                cells = f"The row has {len(cells)} cells; the header has {width}."
            # Bad rows travel in the chunk too, so errors are recorded in row order.
            chunk.append((number, cells))
            if len(chunk) >= chunk_rows:
                _score_chunk(session, plan, names, chunk, writer, tally, state)
                chunk = []
                chunks += 1
                _emit_chunk(emit, tally, started)
        if chunk:
            _score_chunk(session, plan, names, chunk, writer, tally, state)
            chunks += 1
        if state["columns"] is None:
            writer.writerow([plan.key_name, *names])
    if tally.rows_done == 0:
        if tally.rows_failed == 0:
            raise Refusal("The file has a header but no data rows.")
        first = tally.errors[0]
        raise Refusal(
            f"No row could be scored: all {tally.rows_failed:,} rows are bad "
            f"(row {first['row']}: {first['reason']})"
        )
    _emit_chunk(emit, tally, started)
    return {
        "rows_done": tally.rows_done,
        "rows_failed": tally.rows_failed,
        "rows_total": tally.rows_done + tally.rows_failed,
        "errors": tally.errors,
        "chunks": chunks,
        "chunk_rows": chunk_rows,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _emit_chunk(emit, tally: Tally, started: float) -> None:
    elapsed = max(time.perf_counter() - started, 1e-9)
    emit(
        {
            "event": "chunk",
            "rows_done": tally.rows_done,
            "rows_failed": tally.rows_failed,
            "throughput": round((tally.rows_done + tally.rows_failed) / elapsed, 1),
            "errors": tally.new_errors,
        }
    )
    tally.new_errors = []


def _score_chunk(session, plan: Plan, names, chunk, writer, tally: Tally, state: dict) -> None:
    """Score a chunk at once; when that fails, row by row so the bad rows get the blame."""
    failures = [(number, cells) for number, cells in chunk if isinstance(cells, str)]
    candidates = [(number, cells) for number, cells in chunk if not isinstance(cells, str)]
    good, results = candidates, None
    try:
        if candidates:
            feeds = tensors_for(plan, [cells for _number, cells in candidates])
            results = session.run(None, feeds)
    except Exception:
        good, parts = [], []
        for number, cells in candidates:
            try:
                parts.append(session.run(None, _row_feeds(plan, cells)))
                good.append((number, cells))
            except RowError as error:
                failures.append((number, str(error)))
            except Exception as error:
                failures.append((number, f"The model failed on this row: {_short(error)}"))
        results = _concatenate(parts) if parts else None
    for number, reason in sorted(failures):
        tally.fail(number, reason)
    if not good:
        return
    if state["columns"] is None:
        state["columns"] = output_columns(names, results)
        writer.writerow([plan.key_name, *(column for column, _name, _index in state["columns"])])
    key = plan.key_index
    for (number, cells), outputs in zip(
        good, result_rows(state["columns"], names, results, len(good)), strict=True
    ):
        writer.writerow([cells[key] if key is not None else number, *outputs])
    tally.rows_done += len(good)


def _concatenate(parts: list[list]) -> list:
    import numpy as np

    merged = []
    for index in range(len(parts[0])):
        pieces = [part[index] for part in parts]
        if hasattr(pieces[0], "shape"):
            merged.append(np.concatenate(pieces, axis=0))
        else:
            merged.append([item for piece in pieces for item in piece])
    return merged


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if "] : " in text[:80]:
        text = text.split("] : ", 1)[1]
    return text[:400] or type(error).__name__


def peak_rss_bytes() -> int:
    """This process's peak resident memory. VmHWM first: ru_maxrss starts at the parent's
    peak in a forked child (Linux keeps it across exec), which would hide our own."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str] | None = None) -> int:
    """The child's entry point: limits first, then score, one JSON line per event."""
    parser = argparse.ArgumentParser(prog="python -m registry.batch")
    parser.add_argument("model", type=Path)
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--signature", required=True)
    parser.add_argument("--key-column", default="")
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    parser.add_argument("--max-errors", type=int, default=100)
    parser.add_argument("--max-cell-chars", type=int, default=MAX_CELL_CHARS)
    parser.add_argument("--memory-bytes", type=int, default=0)
    parser.add_argument("--cpu-seconds", type=int, default=0)
    args = parser.parse_args(argv)
    if args.memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (args.memory_bytes, args.memory_bytes))
    if args.cpu_seconds:
        resource.setrlimit(resource.RLIMIT_CPU, (args.cpu_seconds, args.cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Native code may print; only our JSON lines go to the parent's stdout.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    out = io.TextIOWrapper(os.fdopen(result_fd, "wb"), encoding="utf-8", line_buffering=True)

    def emit(event: dict) -> None:
        out.write(json.dumps(event) + "\n")

    try:
        summary = score_file(
            args.model,
            args.input,
            args.output,
            signature=json.loads(args.signature),
            key_column=args.key_column,
            chunk_rows=args.chunk_rows,
            max_errors=args.max_errors,
            max_cell_chars=args.max_cell_chars,
            emit=emit,
        )
    except Refusal as refusal:
        emit({"event": "failed", "reason": refusal.message, "peak_rss_bytes": peak_rss_bytes()})
    except MemoryError:
        emit(
            {
                "event": "failed",
                "reason": "Scoring needed more memory than the batch job limit.",
                "peak_rss_bytes": peak_rss_bytes(),
            }
        )
    except Exception as error:
        emit(
            {
                "event": "failed",
                "reason": f"Scoring failed unexpectedly: {type(error).__name__}: {_short(error)}",
                "peak_rss_bytes": peak_rss_bytes(),
            }
        )
    else:
        summary.pop("errors")
        emit({"event": "done", **summary, "peak_rss_bytes": peak_rss_bytes()})
    out.close()
    return 0


# ---------------------------------------------------------------------------------------------
# Running the child (parent side).


def run_in_child(
    model_path: Path,
    input_path: Path,
    output_path: Path,
    *,
    signature: dict,
    key_column: str = "",
    chunk_rows: int = 10_000,
    max_errors: int = 100,
    max_cell_chars: int = MAX_CELL_CHARS,
    memory_bytes: int = 0,
    timeout_seconds: int = 0,
    on_event=lambda event: True,
    poll_seconds: float = 2.0,
) -> dict[str, Any]:
    """Score in a fresh Python process; `on_event` sees every event and returns False to stop
    the child (cancellation). Also called every `poll_seconds` with `{"event": "tick"}` while
    a chunk runs. Returns the last event: done, failed or cancelled; never raises for a bad
    file or model, whatever it does to the child."""
    import queue
    import subprocess
    import threading

    env = sandbox.child_environment()
    command = [
        *sandbox.child_command("registry.batch"),
        str(Path(model_path).resolve()),
        str(Path(input_path).resolve()),
        str(Path(output_path).resolve()),
        "--signature",
        json.dumps(signature),
        "--key-column",
        key_column,
        "--chunk-rows",
        str(chunk_rows),
        "--max-errors",
        str(max_errors),
        "--max-cell-chars",
        str(max_cell_chars),
        "--memory-bytes",
        str(memory_bytes),
        "--cpu-seconds",
        str(timeout_seconds + 1 if timeout_seconds else 0),
    ]
    import tempfile

    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            cwd=sandbox.PROJECT_ROOT,
            env=env,
            start_new_session=True,
        )
        lines: queue.Queue = queue.Queue()

        def pump() -> None:
            for raw in process.stdout:
                lines.put(raw)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout_seconds if timeout_seconds else None
        last: dict[str, Any] | None = None
        try:
            while True:
                try:
                    raw = lines.get(timeout=poll_seconds)
                except queue.Empty:
                    event = {"event": "tick"}
                else:
                    if raw is None:
                        break
                    try:
                        event = json.loads(raw)
                    except ValueError:
                        continue
                if event.get("event") in ("done", "failed"):
                    last = event
                    continue
                if deadline is not None and time.monotonic() > deadline:
                    _stop(process)
                    return {
                        "event": "failed",
                        "reason": f"The batch job did not finish within {timeout_seconds} seconds.",
                    }
                if on_event(event) is False:
                    _stop(process)
                    return {"event": "cancelled"}
        except BaseException:
            _stop(process)
            raise
        try:
            # The child closed its output: it is exiting on its own.
            returncode = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _stop(process)
            returncode = process.returncode
        if last is not None:
            return last
        stderr.seek(0)
        tail = " ".join(stderr.read()[-4000:].decode("utf-8", "replace").split())[-400:]
        if returncode < 0:
            reason = f"The scoring process was stopped by signal {-returncode}"
            if memory_bytes:
                reason += f", most likely for needing more memory than {memory_bytes:,} bytes"
            return {"event": "failed", "reason": reason + "."}
        if "MemoryError" in tail:
            return {"event": "failed", "reason": "Scoring needed more memory than the limit."}
        return {
            "event": "failed",
            "reason": f"The scoring process failed (exit code {returncode}): {tail}".strip(),
        }


def _stop(process) -> None:
    process.kill()
    process.wait()


if __name__ == "__main__":
    sys.exit(main())
