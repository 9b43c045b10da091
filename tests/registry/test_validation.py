"""Validation of real ONNX files in the sandboxed child: ready with the exact signature, or
invalid with a reason a person understands; the parent (the worker) always survives."""

import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from accounts.actor import Actor
from registry import services, tasks, validation
from registry.models import ModelVersion
from tests.registry import onnx_files
from tests.registry.conftest import audit_actions, register, validated

pytestmark = pytest.mark.django_db

FP32_4 = {"name": "X", "datatype": "FP32", "shape": [-1, 4]}
SKLEARN_OUTPUTS = [
    {"name": "output_label", "datatype": "INT64", "shape": [-1]},
    {
        "name": "output_probability",
        "datatype": "BYTES",
        "shape": [-1],
        "type": "seq(map(int64, float))",
    },
]


def _sklearn(estimator):
    return lambda: onnx_files.sklearn_onnx(estimator)


GENERATED = {
    "linear-regressor": (
        onnx_files.linear_regressor,
        {
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}],
            "outputs": [{"name": "prediction", "datatype": "FP32", "shape": [-1, 1]}],
        },
    ),
    "mlp-classifier": (
        onnx_files.mlp_classifier,
        {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
                {"name": "label", "datatype": "INT64", "shape": [-1]},
            ],
        },
    ),
    "string-input": (
        onnx_files.string_encoder,
        {
            "inputs": [{"name": "city", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "code", "datatype": "INT64", "shape": [-1]}],
        },
    ),
    "two-inputs": (
        onnx_files.two_inputs,
        {
            "inputs": [
                {"name": "age", "datatype": "FP32", "shape": [-1, 1]},
                {"name": "city", "datatype": "BYTES", "shape": [-1, 1]},
            ],
            "outputs": [
                {"name": "age_out", "datatype": "FP32", "shape": [-1, 1]},
                {"name": "city_out", "datatype": "BYTES", "shape": [-1, 1]},
            ],
        },
    ),
    "sklearn-logistic-regression": (
        _sklearn(LogisticRegression(max_iter=500)),
        {"inputs": [FP32_4], "outputs": SKLEARN_OUTPUTS},
    ),
    "sklearn-random-forest": (
        _sklearn(RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0)),
        {"inputs": [FP32_4], "outputs": SKLEARN_OUTPUTS},
    ),
    "sklearn-mlp": (
        _sklearn(MLPClassifier(hidden_layer_sizes=(8,), max_iter=50, random_state=0)),
        {"inputs": [FP32_4], "outputs": SKLEARN_OUTPUTS},
    ),
}

IMAGE = {"datatype": "FP32", "shape": [1, 3, 224, 224]}
SHIPPED = {
    "ort-logreg-iris": (
        onnx_files.ORT_DATASETS / "logreg_iris.onnx",
        {
            "inputs": [{"name": "float_input", "datatype": "FP32", "shape": [3, 2]}],
            "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [3]},
                {
                    "name": "probabilities",
                    "datatype": "BYTES",
                    "shape": [-1],
                    "type": "seq(map(int64, float))",
                },
            ],
        },
    ),
    "ort-mul-1": (
        onnx_files.ORT_DATASETS / "mul_1.onnx",
        {
            "inputs": [{"name": "X", "datatype": "FP32", "shape": [3, 2]}],
            "outputs": [{"name": "Y", "datatype": "FP32", "shape": [3, 2]}],
        },
    ),
    "ort-sigmoid": (
        onnx_files.ORT_DATASETS / "sigmoid.onnx",
        {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 4, 5]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [3, 4, 5]}],
        },
    ),
    "onnx-single-relu": (
        onnx_files.ONNX_TEST_DATA / "simple/test_single_relu_model/model.onnx",
        {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2]}],
        },
    ),
    "onnx-sequence-model": (
        onnx_files.ONNX_TEST_DATA / "simple/test_sequence_model1/model.onnx",
        {
            "inputs": [
                {"name": "X", "datatype": "FP32", "shape": [2, 3, 4]},
                {"name": "Y", "datatype": "FP32", "shape": [1, 3, 4]},
                {"name": "Z", "datatype": "FP32", "shape": [3, 3, 4]},
            ],
            "outputs": [{"name": "out", "datatype": "FP32", "shape": [-1, 3, 4]}],
        },
    ),
    "onnx-light-squeezenet": (
        onnx_files.ONNX_TEST_DATA / "light/light_squeezenet.onnx",
        {
            "inputs": [{"name": "data_0", **IMAGE}],
            "outputs": [{"name": "softmaxout_1", "datatype": "FP32", "shape": [1, 1000, 1, 1]}],
        },
    ),
    "onnx-light-shufflenet": (
        onnx_files.ONNX_TEST_DATA / "light/light_shufflenet.onnx",
        {
            "inputs": [{"name": "gpu_0/data_0", **IMAGE}],
            "outputs": [{"name": "gpu_0/softmax_1", "datatype": "FP32", "shape": [1, 1000]}],
        },
    ),
}

REPORT_KEYS = {
    "file_size",
    "checks",
    "ir_version",
    "producer",
    "opsets",
    "nodes",
    "tensor_bytes",
    "load_time_ms",
    "latency_ms",
    "onnx_version",
    "onnxruntime_version",
}
ALL_CHECKS = [
    "parse",
    "opset",
    "operator-domains",
    "external-data",
    "tensor-sizes",
    "onnx-checker",
    "session",
    "signature",
    "smoke-inference",
]


def _assert_ready(version: ModelVersion, signature: dict, size: int) -> None:
    assert (version.status, version.status_reason) == ("ready", "")
    assert version.signature == signature
    report = version.validation_report
    assert set(report) >= REPORT_KEYS
    assert report["checks"] == ALL_CHECKS
    assert report["file_size"] == size
    assert report["latency_ms"] > 0 and report["load_time_ms"] > 0


@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_models_validate_ready_with_their_signature(
    name, scientist_actor, registered, onnx_path
):
    build, signature = GENERATED[name]
    path = onnx_path(build())
    version = validated(register(scientist_actor, registered, path))
    _assert_ready(version, signature, path.stat().st_size)
    assert audit_actions()[-3:] == [
        "version.register",
        "version.validation_started",
        "version.ready",
    ]


@pytest.mark.parametrize("name", list(SHIPPED))
def test_models_shipped_in_packages_validate_ready(name, scientist_api, registered):
    path, signature = SHIPPED[name]
    with open(path, "rb") as stream:
        response = scientist_api.post(
            "/api/v1/models/iris/versions/", {"file": stream}, format="multipart"
        )
    assert response.status_code == 201, response.json()
    version = validated(ModelVersion.objects.get(number=response.json()["number"]))
    _assert_ready(version, signature, Path(path).stat().st_size)
    body = scientist_api.get(f"/api/v1/models/iris/versions/{version.number}/").json()
    assert (body["status"], body["signature"]) == ("ready", signature)


def test_report_records_opset_producer_and_sizes(tmp_path):
    path = onnx_files.save(onnx_files.mlp_classifier(), tmp_path / "model.onnx")
    report = validation.check_file(path, root=tmp_path, max_tensor_bytes=1024**3)["report"]
    assert (report["opsets"], report["producer"], report["ir_version"], report["nodes"]) == (
        {"ai.onnx": 17},
        "tests",
        8,
        5,
    )
    assert report["tensor_bytes"] == (4 * 8 + 8 * 3) * 4
    assert report["file_size"] == path.stat().st_size


def _reshape_that_fails_at_run_time():
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
        [numpy_helper.from_array(np.array([2, 2], dtype=np.int64), "shape")],
    )
    return onnx_files._model(graph)


def _undefined_input():
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "nowhere"], ["y"])],
        "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    return onnx_files._model(graph)


OUTSIDE = "Tensor 'W' keeps its data in an external file outside the model's folder"
INVALID = {
    "custom-op-domain": (
        onnx_files.custom_domain,
        "The model imports the operator domain 'com.example.custom', which "
        "needs a custom-operator library; Modeldeck loads none. Allowed "
        "domains: the default ONNX domain, 'ai.onnx', 'ai.onnx.ml', "
        "'com.microsoft'.",
    ),
    "unknown-com-microsoft-op": (
        onnx_files.unknown_microsoft_op,
        "Operator 'NotAnOrtOperator' of domain 'com.microsoft' is not "
        "one that onnxruntime ships; it would need a custom-operator "
        "library.",
    ),
    "external-data-parent": (
        lambda: onnx_files.external_data("../../etc/passwd"),
        f"{OUTSIDE} ('../../etc/passwd').",
    ),
    "huge-declared-tensor": (
        onnx_files.huge_declared_tensor,
        "Tensor 'W' declares shape [100000, 100000] (37.3 GiB) but holds 0 "
        "values; the file is corrupt or crafted.",
    ),
    "opset-too-old": (
        onnx_files.old_opset,
        "The model uses opset 5 of the default ONNX domain; Modeldeck supports "
        "opsets 7 to 28. Re-export it with a supported opset.",
    ),
    "checker": (
        _undefined_input,
        "The ONNX checker refuses the model: Nodes in a graph must be topologically "
        "sorted, however input 'nowhere' of node: name: OpType: Add is not output of "
        "any previous nodes.",
    ),
}


@pytest.mark.parametrize("name", ["custom-op-domain", "huge-declared-tensor"])
def test_bad_models_end_invalid_with_a_readable_reason(
    name, scientist_actor, registered, onnx_path
):
    build, reason = INVALID[name]
    version = validated(register(scientist_actor, registered, onnx_path(build())))
    assert (version.status, version.status_reason, version.signature) == ("invalid", reason, {})
    assert audit_actions()[-1] == "version.invalid"


def test_a_model_failing_only_on_generated_inputs_passes_with_a_warning(tmp_path):
    """It loaded and passed the graph checks: zeros may lie outside its domain, so the version
    becomes ready with a warning; the same failure on reference rows refuses it."""
    path = onnx_files.save(_reshape_that_fails_at_run_time(), tmp_path / "model.onnx")
    outcome = validation.check_file(path, root=tmp_path, max_tensor_bytes=4 * 1024**3)
    assert outcome["ok"] is True
    assert outcome["smoke"]["warning"] == validation.SMOKE_WARNING
    assert outcome["report"]["checks"][-2:] == ["session", "signature"]
    reference = tmp_path / "reference.csv"
    reference.write_text("x_0,x_1,x_2\n1,2,3\n")
    with pytest.raises(validation.Refusal) as refused:
        validation.check_file(
            path, root=tmp_path, max_tensor_bytes=4 * 1024**3, reference=reference
        )
    assert refused.value.check == "smoke-inference"
    assert refused.value.message.startswith(
        "The model failed a test inference on its reference rows:"
    )


@pytest.mark.parametrize("name", list(INVALID))
def test_every_check_refuses_readably(name, tmp_path):
    """The child's checks, called in-process on real files (the sandbox costs a process each;
    the two end-to-end cases above cover the path through it)."""
    build, reason = INVALID[name]
    path = onnx_files.save(build(), tmp_path / "model.onnx")
    with pytest.raises(validation.Refusal) as refused:
        validation.check_file(path, root=tmp_path, max_tensor_bytes=4 * 1024**3)
    assert refused.value.message.startswith(reason), refused.value.message


EXTERNAL_DATA = {
    "..\\..\\etc\\passwd": f"{OUTSIDE} ('..\\\\..\\\\etc\\\\passwd').",
    "/etc/passwd": "Tensor 'W' keeps its data in an external file at an absolute path "
    "('/etc/passwd'); only files next to the model, inside its own folder, are "
    "allowed.",
    "C:\\Windows\\win.ini": "Tensor 'W' keeps its data in an external file at an absolute "
    "path ('C:\\\\Windows\\\\win.ini'); only files next to the model, "
    "inside its own folder, are allowed.",
    "sub/../../outside.bin": f"{OUTSIDE} ('sub/../../outside.bin').",
    "link.bin": "Tensor 'W' keeps its data in an external file that resolves outside the "
    "model's folder ('link.bin').",
    "%2e%2e%2fetc%2fpasswd": "Tensor 'W' keeps its data in an external file "
    "('%2e%2e%2fetc%2fpasswd') that was not uploaded with it.",
    "..%252f..%252fetc%252fpasswd": "Tensor 'W' keeps its data in an external file "
    "('..%252f..%252fetc%252fpasswd') that was not uploaded "
    "with it.",
    "．．/．．/etc/passwd": "Tensor 'W' keeps its data in an external file "
    "('．．/．．/etc/passwd') that was not uploaded with it.",
    "weights\x00.bin": "Tensor 'W' keeps its data in an external file without a usable location.",
    "weights.bin": "Tensor 'W' keeps its data in an external file ('weights.bin') that was not "
    "uploaded with it.",
}


@pytest.mark.parametrize("location", list(EXTERNAL_DATA))
def test_external_data_must_stay_in_the_model_folder(location, tmp_path):
    """The same checks the child runs, called in-process on real files for speed."""
    root = tmp_path / "version"
    root.mkdir()
    (tmp_path / "outside.bin").write_bytes(b"\x00" * 16)
    (root / "link.bin").symlink_to(tmp_path / "outside.bin")
    path = onnx_files.save(onnx_files.external_data(location), root / "model.onnx")
    with pytest.raises(validation.Refusal) as refused:
        validation.check_file(path, root=root, max_tensor_bytes=1024**3)
    assert (refused.value.check, refused.value.message) == (
        "external-data",
        EXTERNAL_DATA[location],
    )


def test_external_data_inside_the_folder_is_accepted(tmp_path):
    root = tmp_path / "version"
    root.mkdir()
    (root / "weights.bin").write_bytes(b"\x00" * 8)
    path = onnx_files.save(onnx_files.external_data("weights.bin", length=8), root / "model.onnx")
    outcome = validation.check_file(path, root=root, max_tensor_bytes=1024**3)
    assert outcome["ok"] is True
    assert outcome["signature"]["inputs"] == [
        {"name": "features", "datatype": "FP32", "shape": [-1, 2]}
    ]


def test_pytorch_export_with_opset_6_is_refused():
    path = onnx_files.ONNX_TEST_DATA / "pytorch-converted/test_Conv2d/model.onnx"
    with pytest.raises(validation.Refusal) as refused:
        validation.check_file(path, root=path.parent, max_tensor_bytes=1024**3)
    assert refused.value.message == (
        "The model uses opset 6 of the default ONNX domain; Modeldeck supports opsets 7 to 28. "
        "Re-export it with a supported opset."
    )


def test_model_over_the_memory_limit_ends_invalid(scientist_actor, registered, onnx_path, settings):
    settings.VALIDATION_MEMORY_BYTES = 600 * 1024 * 1024
    version = validated(register(scientist_actor, registered, onnx_path(onnx_files.memory_hog())))
    assert (version.status, version.status_reason) == (
        "invalid",
        "The model needs more memory than the validation limit of 600 MiB to load or run.",
    )
    assert version.validation_report["check"] == "memory"


def test_model_over_the_time_limit_ends_invalid(scientist_actor, registered, onnx_path, settings):
    settings.VALIDATION_TIMEOUT_SECONDS = 2
    started = time.monotonic()
    version = validated(register(scientist_actor, registered, onnx_path(onnx_files.slow_loop())))
    assert time.monotonic() - started < 10
    assert (version.status, version.status_reason) == (
        "invalid",
        "Validation did not finish within 2 seconds; the model is too slow to load "
        "or to run one row.",
    )


def _children_running_validation() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"registry.validation" in command:
            found.append(int(entry.name))
    return found


def test_child_killed_by_a_signal_ends_invalid_and_the_parent_survives(
    scientist_actor, registered, onnx_path, settings
):
    settings.VALIDATION_TIMEOUT_SECONDS = 30
    settings.VALIDATION_MEMORY_BYTES = 2 * 1024**3
    version = register(scientist_actor, registered, onnx_path(onnx_files.slow_loop()))

    def crash_the_child():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            children = _children_running_validation()
            if children:
                time.sleep(0.3)
                os.kill(children[0], signal.SIGSEGV)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=crash_the_child)
    killer.start()
    version = validated(version)
    killer.join()
    assert (version.status, version.status_reason) == (
        "invalid",
        "onnxruntime crashed (SIGSEGV) while checking this model; it may be corrupt, "
        "or need more memory than the limit of 2 GiB.",
    )
    again = validated(
        register(scientist_actor, registered, onnx_path(onnx_files.linear_regressor()))
    )
    assert again.status == "ready"


def test_signals_read_as_sentences():
    def reason(number):
        return validation.outcome_from_process(
            -number, b"", b"", memory_bytes=1024**3, cpu_seconds=61
        ).reason

    assert reason(signal.SIGKILL) == (
        "The validation process was killed (SIGKILL), most likely because the model needs more "
        "memory than the limit of 1 GiB."
    )
    assert reason(signal.SIGXCPU) == "Checking the model used more than 61 seconds of CPU time."
    assert reason(signal.SIGTERM) == "The validation process was stopped by SIGTERM."
    garbled = validation.outcome_from_process(
        1, b"not json", b"Traceback ... boom", memory_bytes=1, cpu_seconds=1
    )
    assert garbled.reason == "The validation process failed (exit code 1): Traceback ... boom"


class TestTaskDiscipline:
    def test_task_returns_quietly_when_the_row_is_gone(self):
        assert tasks.validate_version(987654) is None

    def test_task_does_nothing_for_finished_versions(self, scientist_actor, registered, onnx_path):
        version = register(scientist_actor, registered, onnx_path(onnx_files.linear_regressor()))
        system = Actor.system("tests")
        services.version_mark_validating(actor=system, version_id=version.pk)
        services.version_record_validation(actor=system, version_id=version.pk, ok=True)
        events = audit_actions()
        tasks.validate_version(version.pk)
        assert audit_actions() == events
        assert ModelVersion.objects.get(pk=version.pk).status == "ready"

    def test_compare_and_set_lets_one_runner_win(self, scientist_actor, registered, onnx_path):
        version = register(scientist_actor, registered, onnx_path(onnx_files.linear_regressor()))
        system = Actor.system("tests")
        assert services.version_mark_validating(actor=system, version_id=version.pk) is True
        assert services.version_mark_validating(actor=system, version_id=version.pk) is False
        # A second task finds it validating and leaves it to the first.
        tasks.validate_version(version.pk)
        assert ModelVersion.objects.get(pk=version.pk).status == "validating"
        recorded = services.version_record_validation(
            actor=system, version_id=version.pk, ok=False, reason="first"
        )
        assert recorded.status_reason == "first"
        assert (
            services.version_record_validation(actor=system, version_id=version.pk, ok=True) is None
        )

    def test_requeue_picks_up_lost_and_stuck_validations(
        self, scientist_actor, registered, onnx_path, settings
    ):
        path = onnx_path(onnx_files.linear_regressor())
        lost = register(scientist_actor, registered, path)
        stuck = register(scientist_actor, registered, path)
        fresh = register(scientist_actor, registered, path)
        long_ago = timezone.now() - timedelta(hours=1)
        ModelVersion.objects.filter(pk=lost.pk).update(updated_at=long_ago)
        ModelVersion.objects.filter(pk=stuck.pk).update(
            status="validating", validation_started_at=long_ago
        )
        assert tasks.requeue_stale_validations() == 2
        statuses = dict(ModelVersion.objects.values_list("pk", "status"))
        assert (statuses[lost.pk], statuses[stuck.pk], statuses[fresh.pk]) == (
            "pending",
            "pending",
            "pending",
        )
        assert "version.validation_requeued" in audit_actions()

    def test_archived_while_pending_is_never_validated(
        self, scientist_actor, registered, onnx_path
    ):
        version = register(scientist_actor, registered, onnx_path(onnx_files.linear_regressor()))
        services.version_archive(actor=scientist_actor, version=version)
        tasks.validate_version(version.pk)
        assert ModelVersion.objects.get(pk=version.pk).status == "archived"
