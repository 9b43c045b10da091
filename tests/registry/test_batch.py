"""Batch prediction jobs: results equal onnxruntime, bad files get a clear report, memory stays
bounded, cancellation and redelivery behave, and access follows teams and roles."""

from __future__ import annotations

import csv
import io

import numpy as np
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from accounts.models import AuditEvent
from registry import batch, services, tasks
from registry.models import BatchJob, JobStatus
from tests.registry.conftest import as_upload, register, stored_files, validated
from tests.registry.onnx_files import _model, save

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def scaled_mlp(inputs: int = 4, hidden: int = 32, classes: int = 3, seed: int = 3):
    """An MLP with fan-in scaled weights (as a trained one has): `x` [N, 4] →
    `probabilities` [N, 3] FP32 and `label` [N] INT64."""
    rng = np.random.default_rng(seed)
    w1 = (rng.normal(size=(inputs, hidden)) / np.sqrt(inputs)).astype(np.float32)
    b1 = (rng.normal(size=hidden) * 0.1).astype(np.float32)
    w2 = (rng.normal(size=(hidden, classes)) / np.sqrt(hidden)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "W1", "B1"], ["h"]),
            helper.make_node("Relu", ["h"], ["a"]),
            helper.make_node("Gemm", ["a", "W2"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, inputs])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, classes]),
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
        ],
        [
            numpy_helper.from_array(w1, "W1"),
            numpy_helper.from_array(b1, "B1"),
            numpy_helper.from_array(w2, "W2"),
        ],
    )
    return _model(graph)


def csv_bytes(rows: np.ndarray, *, header=("id", *FEATURES), extra_lines=()) -> bytes:
    lines = [",".join(header)]
    lines += [
        f"r{index}," + ",".join(repr(float(v)) for v in row) for index, row in enumerate(rows)
    ]
    lines += list(extra_lines)
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def mlp_path(tmp_path):
    return save(scaled_mlp(), tmp_path / "mlp.onnx")


@pytest.fixture
def ready_version(registered, scientist_actor, mlp_path):
    return validated(register(scientist_actor, registered, mlp_path))


@pytest.fixture
def rows():
    return np.random.default_rng(7).normal(size=(2_500, 4)).astype(np.float32)


def create(api, data: bytes, version="iris:1", name="input.csv", **fields):
    return api.post(
        "/api/v1/batch-jobs/",
        {"version": version, "file": as_upload(data, name, "text/csv"), **fields},
        format="multipart",
    )


def result_table(api, job_id) -> tuple[list[str], list[list[str]], object]:
    response = api.get(f"/api/v1/batch-jobs/{job_id}/result/")
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode()
    table = list(csv.reader(io.StringIO(body)))
    return table[0], table[1:], response


def test_results_equal_onnxruntime_on_the_same_rows(
    scientist_api, ready_version, mlp_path, rows, settings
):
    settings.BATCH_CHUNK_ROWS = 700
    response = create(scientist_api, csv_bytes(rows))
    assert response.status_code == 201, response.json()
    job_id = response.json()["id"]
    assert response.json()["status"] == "pending"
    tasks.run_batch_job(job_id)

    job = scientist_api.get(f"/api/v1/batch-jobs/{job_id}/").json()
    assert job["status"] == "succeeded"
    assert (job["rows_done"], job["rows_failed"], job["rows_total"]) == (2_500, 0, 2_500)
    assert job["progress"] == 100
    assert job["errors"] == []
    assert job["throughput"] > 0
    # Chunks of at most 700 rows: 2 500 rows take exactly four.
    assert job["report"]["chunks"] == 4
    assert job["report"]["chunk_rows"] == 700

    header, table, response = result_table(scientist_api, job_id)
    assert response["Content-Disposition"] == f'attachment; filename="iris-1-batch-{job_id}.csv"'
    assert header == ["id", "probabilities_0", "probabilities_1", "probabilities_2", "label"]
    assert [line[0] for line in table] == [f"r{index}" for index in range(2_500)]
    session = onnxruntime.InferenceSession(str(mlp_path), providers=["CPUExecutionProvider"])
    probabilities, labels = session.run(None, {"x": rows})
    written = np.array([[float(cell) for cell in line[1:4]] for line in table], dtype=np.float32)
    assert np.array_equal(written, probabilities)
    assert [int(line[4]) for line in table] == labels.tolist()


def test_wrong_types_and_garbage_rows_are_reported_by_row(
    scientist_api, ready_version, rows, settings
):
    settings.BATCH_MAX_ERRORS = 3
    bad = [
        "bad1,1.0,abc,1.0,1.0",
        "bad2,1.0,2.0",
        "bad3,,1.0,1.0,1.0",
        "bad4,1.0,1.0,1.0,1.0,extra",
        '"bad5,1.0,1.0,1.0,1.0,1.0,1.0',  # an unclosed quote runs to the end of the file
    ]
    response = create(scientist_api, csv_bytes(rows[:10], extra_lines=bad))
    assert response.status_code == 201
    tasks.run_batch_job(response.json()["id"])
    job = BatchJob.objects.get()
    assert job.status == JobStatus.SUCCEEDED
    assert (job.rows_done, job.rows_failed) == (10, 5)
    # Only the first three are kept, in row order, each saying why.
    assert job.errors == [
        {"row": 11, "reason": "Column 'sepal_width': 'abc' is not a number."},
        {"row": 12, "reason": "The row has 3 cells; the header has 5."},
        {"row": 13, "reason": "Column 'sepal_length': an empty cell where a value is needed."},
    ]
    _header, table, _response = result_table(scientist_api, job.pk)
    assert len(table) == 10


def test_a_file_of_only_bad_rows_fails_with_a_clear_reason(scientist_api, ready_version):
    response = create(scientist_api, b"id,a,b,c,d\nx,one,two,three,four\ny,1,2\n")
    tasks.run_batch_job(response.json()["id"])
    job = BatchJob.objects.get()
    assert job.status == JobStatus.FAILED
    assert job.status_reason == (
        "No row could be scored: all 2 rows are bad (row 1: Column 'a': 'one' is not a number.)"
    )
    assert job.result_key == ""


def test_missing_columns_are_refused_with_nothing_stored(scientist_api, ready_version):
    before = stored_files()
    response = create(scientist_api, b"id,sepal_length,sepal_width\nr1,1,2\n")
    assert response.status_code == 400
    assert response.json()["error"] == (
        "Missing columns: the model's input 'x' takes 4 columns, in order; the file has 2 "
        "besides the key column 'id': 'sepal_length', 'sepal_width'."
    )
    assert BatchJob.objects.count() == 0
    assert stored_files() == before


def test_missing_named_inputs_are_listed():
    signature = {
        "inputs": [
            {"name": "age", "datatype": "FP32", "shape": [-1, 1]},
            {"name": "city", "datatype": "BYTES", "shape": [-1]},
        ]
    }
    with pytest.raises(batch.Refusal) as refused:
        batch.plan_columns(["id", "age", "town"], signature)
    assert refused.value.message == (
        "Missing columns: the model needs 'city'; the file's header has 'id', 'age', 'town'."
    )
    plan = batch.plan_columns(["id", "age", "city", "note"], signature)
    assert plan.describe() == {
        "key_column": "id",
        "inputs": {"age": ["age"], "city": ["city"]},
        "ignored_columns": ["note"],
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty: the first line must name the columns."),
        (b"\xff\xfe\x00garbage", "The file is neither UTF-8 CSV text nor Parquet."),
        (b"id,a,a,b,c\n", "The header names column 'a' twice."),
        (b"id,,b\n", "Column 2 has no name in the header line."),
        (("," * 1_001 + "\n").encode(), "The file has 1,002 columns; the limit is 1,000."),
    ],
)
def test_unreadable_files_are_refused_with_nothing_stored(
    scientist_api, ready_version, data, message
):
    before = stored_files()
    response = create(scientist_api, data)
    assert response.status_code == 400
    assert response.json()["error"] == message
    assert BatchJob.objects.count() == 0
    assert stored_files() == before


def test_bad_references_are_refused(scientist_api, ready_version, rows):
    data = csv_bytes(rows[:3])
    assert create(scientist_api, data, version="iris").status_code == 400
    assert create(scientist_api, data, version="iris:9").json()["error"] == (
        "Model 'iris' has no version 9 (it has versions 1 to 1)."
    )
    assert create(scientist_api, data, version="nope:1").status_code == 400
    assert BatchJob.objects.count() == 0


def test_an_alias_names_the_version(scientist_api, ready_version, scientist_actor, rows):
    services.alias_set(
        actor=scientist_actor, model=ready_version.model, name="champion", version_number=1
    )
    response = create(scientist_api, csv_bytes(rows[:3]), version="iris@champion")
    assert response.status_code == 201
    assert response.json()["version"] == "iris:1"


def test_viewer_cannot_create_jobs(viewer_api, ready_version, rows):
    before = stored_files()
    response = create(viewer_api, csv_bytes(rows[:3]))
    assert response.status_code == 403
    assert BatchJob.objects.count() == 0
    assert stored_files() == before


def test_other_teams_jobs_do_not_exist(scientist_api, outsider_api, ready_version, rows):
    job_id = create(scientist_api, csv_bytes(rows[:3])).json()["id"]
    tasks.run_batch_job(job_id)
    assert outsider_api.get(f"/api/v1/batch-jobs/{job_id}/").status_code == 404
    assert outsider_api.get(f"/api/v1/batch-jobs/{job_id}/result/").status_code == 404
    assert outsider_api.post(f"/api/v1/batch-jobs/{job_id}/cancel/").status_code == 404
    assert outsider_api.get("/api/v1/batch-jobs/").json()["results"] == []
    # And the other team's version cannot be used at all.
    assert create(outsider_api, csv_bytes(rows[:3])).status_code == 400
    listed = scientist_api.get("/api/v1/batch-jobs/").json()
    assert [job["id"] for job in listed["results"]] == [job_id]
    assert listed["count"] == 1


def test_cancel_stops_the_job_between_chunks(
    scientist_api, ready_version, rows, settings, monkeypatch
):
    settings.BATCH_CHUNK_ROWS = 100
    job_id = create(scientist_api, csv_bytes(rows)).json()["id"]
    record = services.batch_job_record_progress
    seen = []

    def cancel_after_first_chunk(**fields):
        if "rows_done" in fields and not seen:
            seen.append(fields["rows_done"])
            response = scientist_api.post(f"/api/v1/batch-jobs/{job_id}/cancel/")
            assert response.status_code == 200
        return record(**fields)

    monkeypatch.setattr(services, "batch_job_record_progress", cancel_after_first_chunk)
    tasks.run_batch_job(job_id)
    job = BatchJob.objects.get()
    assert job.status == JobStatus.CANCELLED
    assert job.result_key == ""
    assert job.rows_done == 0  # nothing was recorded after the cancel
    assert seen == [100]
    assert scientist_api.get(f"/api/v1/batch-jobs/{job_id}/result/").status_code == 409
    again = scientist_api.post(f"/api/v1/batch-jobs/{job_id}/cancel/")
    assert again.status_code == 409


def test_a_redelivered_task_does_nothing_twice(scientist_api, ready_version, rows):
    job_id = create(scientist_api, csv_bytes(rows[:50])).json()["id"]
    tasks.run_batch_job(job_id)
    first = BatchJob.objects.get()
    tasks.run_batch_job(job_id)
    second = BatchJob.objects.get()
    assert (second.result_key, second.attempt) == (first.result_key, 1)
    actions = AuditEvent.objects.filter(
        object_type="registry.batchjob", object_id=str(job_id)
    ).values_list("action", flat=True)
    assert sorted(actions) == ["batch_job.create", "batch_job.succeeded"]


def test_a_cancelled_pending_job_never_runs(scientist_api, ready_version, rows):
    job_id = create(scientist_api, csv_bytes(rows[:50])).json()["id"]
    scientist_api.post(f"/api/v1/batch-jobs/{job_id}/cancel/")
    tasks.run_batch_job(job_id)
    job = BatchJob.objects.get()
    assert (job.status, job.attempt, job.rows_done) == (JobStatus.CANCELLED, 0, 0)


def test_memory_stays_bounded_on_a_medium_file(tmp_path, mlp_path):
    """The child's peak memory grows far less than the file: it never holds the file."""
    rng = np.random.default_rng(0)
    signature = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]}

    def run(count: int) -> tuple[dict, int]:
        path = tmp_path / f"in-{count}.csv"
        with open(path, "w") as out:
            out.write("id,a,b,c,d\n")
            for start in range(0, count, 50_000):
                block = rng.normal(size=(min(50_000, count - start), 4))
                ids = np.arange(start, start + len(block)).reshape(-1, 1)
                np.savetxt(out, np.hstack([ids, block]), fmt=["%d", *["%.9g"] * 4], delimiter=",")
        outcome = batch.run_in_child(
            mlp_path, path, tmp_path / f"out-{count}.csv", signature=signature, chunk_rows=5_000
        )
        assert outcome["event"] == "done", outcome
        return outcome, path.stat().st_size

    small, _small_size = run(1_000)
    medium, medium_size = run(300_000)
    assert medium["rows_done"] == 300_000
    assert medium["chunks"] == 60
    growth = medium["peak_rss_bytes"] - small["peak_rss_bytes"]
    # Holding the rows as Python strings would need several times the file size.
    assert medium_size > 15 * 1024**2
    assert growth < medium_size / 2, (growth, medium_size)


def test_parquet_input_scores_like_csv(scientist_api, ready_version, mlp_path, rows, tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as parquet

    table = pyarrow.table(
        {"id": [f"r{index}" for index in range(100)]}
        | {name: rows[:100, index] for index, name in enumerate(FEATURES)}
    )
    path = tmp_path / "input.parquet"
    parquet.write_table(table, path)
    response = create(scientist_api, path.read_bytes(), name="input.parquet")
    assert response.status_code == 201
    assert response.json()["input_format"] == "parquet"
    tasks.run_batch_job(response.json()["id"])
    _header, written, _response = result_table(scientist_api, response.json()["id"])
    session = onnxruntime.InferenceSession(str(mlp_path), providers=["CPUExecutionProvider"])
    probabilities, labels = session.run(None, {"x": rows[:100]})
    assert [int(line[4]) for line in written] == labels.tolist()
    assert np.array_equal(
        np.array([[float(cell) for cell in line[1:4]] for line in written], dtype=np.float32),
        probabilities,
    )


# ---------------------------------------------------------------------------------------------
# Pages.


def test_pages_show_progress_polling_only_while_running(client, scientist, ready_version, rows):
    client.force_login(scientist)
    page = client.get("/batch-jobs/new/")
    assert page.status_code == 200
    assert b'value="iris:1"' in page.content
    response = client.post(
        "/batch-jobs/new/",
        {"version": "iris:1", "file": as_upload(csv_bytes(rows[:20]), "<i>in.csv")},
    )
    job = BatchJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/batch-jobs/{job.pk}/"
    pending = client.get(f"/batch-jobs/{job.pk}/").content.decode()
    assert 'hx-trigger="every 2s"' in pending
    assert "&lt;i&gt;in.csv" in pending and "<i>in" not in pending
    assert "data-confirm=" in pending
    tasks.run_batch_job(job.pk)
    done = client.get(f"/batch-jobs/{job.pk}/").content.decode()
    assert "hx-trigger" not in done
    assert f'href="/batch-jobs/{job.pk}/result/"' in done
    assert '<progress id="batch-progress" max="100" value="100">' in done
    download = client.get(f"/batch-jobs/{job.pk}/result/")
    assert download["Content-Disposition"].startswith("attachment;")
    listing = client.get("/batch-jobs/").content.decode()
    assert f'href="/batch-jobs/{job.pk}/"' in listing


def test_page_cancel_and_viewer_refusal(client, scientist, viewer, ready_version, rows):
    client.force_login(viewer)
    response = client.post(
        "/batch-jobs/new/", {"version": "iris:1", "file": as_upload(csv_bytes(rows[:5]))}
    )
    assert response.status_code == 403
    assert BatchJob.objects.count() == 0
    client.force_login(scientist)
    client.post("/batch-jobs/new/", {"version": "iris:1", "file": as_upload(csv_bytes(rows))})
    job = BatchJob.objects.get()
    client.force_login(viewer)
    assert client.post(f"/batch-jobs/{job.pk}/cancel/").status_code == 403
    client.force_login(scientist)
    client.post(f"/batch-jobs/{job.pk}/cancel/")
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED


def test_outsider_pages_are_404(client, scientist, outsider, ready_version, rows):
    client.force_login(scientist)
    client.post("/batch-jobs/new/", {"version": "iris:1", "file": as_upload(csv_bytes(rows))})
    job = BatchJob.objects.get()
    client.force_login(outsider)
    assert client.get(f"/batch-jobs/{job.pk}/").status_code == 404
    assert client.post(f"/batch-jobs/{job.pk}/cancel/").status_code == 404
    assert client.get(f"/batch-jobs/{job.pk}/result/").status_code == 404
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING
