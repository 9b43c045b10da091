"""Uploading versions: streamed, hashed, decided by content, refused with nothing left behind."""

import hashlib
import re
from pathlib import Path

import pytest
from django.conf import settings

from accounts.models import AuditEvent
from registry import services
from registry.models import Artifact, ArtifactKind, ModelVersion
from tests.registry import onnx_files
from tests.registry.conftest import as_upload, raw_multipart, register, stored_files

pytestmark = pytest.mark.django_db

URL = "/api/v1/models/iris/versions/"


def post(api, content, name="model.onnx", **fields):
    return api.post(URL, {"file": as_upload(content, name), **fields}, format="multipart")


def test_upload_answers_201_pending_and_stores_under_a_server_key(
    scientist_api, registered, onnx_path, upload_temp_dir
):
    path = onnx_path(onnx_files.linear_regressor())
    response = post(
        scientist_api,
        path,
        metrics='{"rmse": 0.25}',
        params='{"alpha": 0.1}',
        source="https://git.example.com/iris/commit/abc",
        git_commit="abc123",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert {
        key: body[key]
        for key in (
            "number",
            "status",
            "approval",
            "sha256",
            "size",
            "metrics",
            "params",
            "source",
            "git_commit",
            "aliases",
            "reference",
            "file_name",
            "signature",
        )
    } == {
        "number": 1,
        "status": "pending",
        "approval": "pending",
        "sha256": digest,
        "size": path.stat().st_size,
        "metrics": {"rmse": 0.25},
        "params": {"alpha": 0.1},
        "source": "https://git.example.com/iris/commit/abc",
        "git_commit": "abc123",
        "aliases": [],
        "reference": "iris:1",
        "file_name": "model.onnx",
        "signature": {},
    }
    artifact = Artifact.objects.get()
    assert re.fullmatch(rf"models/{registered.pk}/[0-9a-f]{{32}}\.onnx", artifact.storage_key)
    stored = Path(settings.ARTIFACT_ROOT) / artifact.storage_key
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest
    assert list(upload_temp_dir.iterdir()) == []
    assert AuditEvent.objects.filter(action="version.register").count() == 1


def test_numbers_are_dense_per_model(scientist_api, registered, onnx_path, team, scientist_actor):
    services.model_create(actor=scientist_actor, team=team, name="other")
    path = onnx_path(onnx_files.linear_regressor())
    numbers = [post(scientist_api, path).json()["number"] for _ in range(3)]
    other = scientist_api.post(
        "/api/v1/models/other/versions/", {"file": as_upload(path)}, format="multipart"
    ).json()["number"]
    assert (numbers, other) == ([1, 2, 3], 1)


def test_file_name_is_metadata_only(scientist_api, registered, onnx_path, upload_temp_dir):
    """Every trick in the uploaded file name ends up as harmless text, never as a path."""
    path = onnx_path(onnx_files.linear_regressor())
    names = {
        "../../etc/passwd": "passwd",
        "..\\..\\windows\\system.ini": "system.ini",
        "/etc/passwd": "passwd",
        "%2e%2e%2fetc%2fpasswd": "%2e%2e%2fetc%2fpasswd",
        "..%252f..%252fpasswd": "..%252f..%252fpasswd",
        "model\x00.onnx": "model.onnx",
        "．．／．．／etc／passwd": "passwd",
        "<script>alert(1)</script>.onnx": "script>.onnx",
        "a" * 600 + ".onnx": "a" * 194 + "….onnx",
    }
    before = stored_files()
    for sent, kept in names.items():
        body = raw_multipart({}, {"file": (sent, path.read_bytes())})
        response = scientist_api.post(URL, **body)
        assert response.status_code == 201, (sent, response.json())
        assert response.json()["file_name"] == kept, sent
    keys = list(Artifact.objects.values_list("storage_key", flat=True))
    assert all(re.fullmatch(rf"models/{registered.pk}/[0-9a-f]{{32}}\.onnx", key) for key in keys)
    assert stored_files() - before == set(keys)
    assert not Path("/etc/passwd.onnx").exists()
    assert list(upload_temp_dir.iterdir()) == []
    # A name that is only "..": Django drops the part, so no file arrives at all.
    response = scientist_api.post(URL, **raw_multipart({}, {"file": ("..", path.read_bytes())}))
    assert response.status_code == 400
    assert response.json()["error"] == "file: No file was submitted."
    # A name past Django's multipart header limit (lower since Django 5.2.19): the whole request
    # is refused before the view runs (Django's own 400 page) and nothing is stored.
    response = scientist_api.post(
        URL, **raw_multipart({}, {"file": ("a" * 5_000 + ".onnx", path.read_bytes())})
    )
    assert response.status_code == 400
    assert Artifact.objects.count() == len(names)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "The file is empty."),
        (
            onnx_files.pickle_bytes(),
            "This is a Python pickle, not an ONNX model. Pickles run "
            "code when loaded, so Modeldeck never opens them. Modeldeck accepts ONNX models only: "
            "export with skl2onnx, torch.onnx.export or tf2onnx.",
        ),
        (
            b"PK\x03\x04" + b"\x00" * 100,
            "This is a zip archive (a PyTorch .pt/.pth file, a "
            "Keras .keras file or similar), not an ONNX model. Modeldeck accepts ONNX models only: "
            "export with skl2onnx, torch.onnx.export or tf2onnx.",
        ),
        (
            b"\x89HDF\r\n\x1a\n" + b"\x00" * 64,
            "This is an HDF5 file (a Keras .h5 model?), not "
            "an ONNX model. Modeldeck accepts ONNX models only: export with skl2onnx, "
            "torch.onnx.export or tf2onnx.",
        ),
        (
            b"a,b\n1,2\n",
            "This is not an ONNX model (byte 0 holds field 12 (wire type 1), which "
            "an ONNX model does not have). Modeldeck accepts ONNX models only: export with "
            "skl2onnx, torch.onnx.export or tf2onnx.",
        ),
        (
            b"\x08\x07",
            "The file holds no ONNX graph. Modeldeck accepts ONNX models only: export "
            "with skl2onnx, torch.onnx.export or tf2onnx.",
        ),
    ],
    ids=["empty", "pickle", "zip", "hdf5", "csv", "no-graph"],
)
def test_non_onnx_content_is_refused_whatever_its_name(
    scientist_api, registered, nothing_left_behind, content, message
):
    response = post(scientist_api, content, name="model.onnx")
    assert response.status_code == 400
    assert response.json() == {"error": message, "detail": {"file": [message]}}


def test_real_zip_archive_is_refused(scientist_api, registered, nothing_left_behind, tmp_path):
    response = post(scientist_api, onnx_files.zip_bytes(tmp_path), name="model.onnx")
    assert response.status_code == 400
    assert response.json()["error"].startswith("This is a zip archive")


@pytest.mark.parametrize("parse_limit", [64 * 1024 * 1024, 16], ids=["parsed", "walked"])
def test_truncated_onnx_is_refused(
    scientist_api, registered, onnx_path, nothing_left_behind, settings, parse_limit
):
    settings.MODELDECK_PARSE_IN_PROCESS_BYTES = parse_limit
    whole = onnx_path(onnx_files.mlp_classifier()).read_bytes()
    response = post(scientist_api, whole[: len(whole) - 40])
    assert response.status_code == 400
    assert response.json()["error"] == (
        "The file is truncated: it ends in the middle of the model. Upload it again."
    )


def test_large_files_are_walked_not_loaded(scientist_api, registered, onnx_path, settings):
    """Above the in-process limit the structure is checked part by part; same answer."""
    settings.MODELDECK_PARSE_IN_PROCESS_BYTES = 16
    response = post(scientist_api, onnx_path(onnx_files.mlp_classifier()))
    assert (response.status_code, response.json()["number"]) == (201, 1)


def test_oversized_upload_is_refused_by_its_declared_length(
    scientist_api, registered, nothing_left_behind, settings
):
    settings.MODELDECK_MAX_UPLOAD_BYTES = 1_000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000
    response = post(scientist_api, b"\x08\x07" + b"\x00" * 200_000)
    assert response.status_code == 413
    assert response.json() == {
        "error": "The upload is larger than the limit of 1000 bytes.",
        "detail": {"limit_bytes": 1000},
    }


def test_oversized_upload_is_cut_off_while_streaming(
    scientist_api, registered, onnx_path, nothing_left_behind, settings
):
    """The body fits the declared-length allowance, so the handler counts bytes as they come."""
    settings.MODELDECK_MAX_UPLOAD_BYTES = 10_000
    response = post(
        scientist_api, onnx_path(onnx_files.linear_regressor()).read_bytes() + b"\x00" * 20_000
    )
    assert response.status_code == 413
    assert response.json()["error"] == "The upload is larger than the limit of 9.8 KiB."


def test_file_field_is_required(scientist_api, registered, nothing_left_behind):
    response = scientist_api.post(URL, {"source": "https://example.com"}, format="multipart")
    assert response.status_code == 400
    assert response.json() == {
        "error": "file: No file was submitted.",
        "detail": {"file": ["No file was submitted."]},
    }


def test_json_body_is_refused_on_upload(scientist_api, registered, nothing_left_behind):
    response = scientist_api.post(URL, {"file": "x"}, format="json")
    assert response.status_code == 415


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        (
            {"source": "../../etc/passwd"},
            400,
            "The source must be an http(s) URL; got '../../etc/passwd'.",
        ),
        (
            {"source": "file:///etc/passwd"},
            400,
            "The source must be an http(s) URL; got 'file:///etc/passwd'.",
        ),
        (
            {"data_reference": "../../etc/passwd"},
            400,
            "data_reference must not step out of a folder with '..'.",
        ),
        (
            {"data_reference": "data/..\\..\\secrets"},
            400,
            "data_reference must not step out of a folder with '..'.",
        ),
        (
            {"data_reference": "data/%2e%2e%2fsecrets"},
            400,
            "data_reference must not step out of a folder with '..'.",
        ),
        (
            {"data_reference": "data/..%252fsecrets"},
            400,
            "data_reference must not step out of a folder with '..'.",
        ),
        (
            {"data_reference": "data/．．/secrets"},
            400,
            "data_reference must not step out of a folder with '..'.",
        ),
        (
            {"data_reference": "data\x01set"},
            400,
            "data_reference must not contain control characters.",
        ),
        ({"git_commit": "abc\x00def"}, 400, "git_commit: Null characters are not allowed."),
        ({"metrics": "[1, 2]"}, 400, "metrics must be a JSON object."),
        (
            {"metrics": "{bad json"},
            400,
            "metrics is not valid JSON: Expecting property name "
            "enclosed in double quotes: line 1 column 2 (char 1).",
        ),
        ({"metrics": '{"accuracy": "high"}'}, 400, "Metric 'accuracy' must be a finite number."),
        ({"metrics": '{"accuracy": NaN}'}, 400, "Metric 'accuracy' must be a finite number."),
        (
            {"params": '{"layers": [1, 2]}'},
            400,
            "Parameter 'layers' must be a string, number, boolean or null.",
        ),
        ({"derived_from": "7"}, 400, "Model 'iris' has no version 7."),
    ],
)
def test_bad_fields_are_refused_with_nothing_stored(
    scientist_api, registered, onnx_path, nothing_left_behind, fields, status, message
):
    response = post(scientist_api, onnx_path(onnx_files.linear_regressor()), **fields)
    assert response.status_code == status
    assert response.json()["error"] == message


def test_archived_model_takes_no_versions(
    scientist_api, registered, onnx_path, deployer_actor, nothing_left_behind
):
    services.model_archive(actor=deployer_actor, model=registered)
    response = post(scientist_api, onnx_path(onnx_files.linear_regressor()))
    assert response.status_code == 409
    assert response.json()["error"] == "Model 'iris' is archived and takes no new versions."


class TestReferenceProfile:
    def test_one_2d_input_maps_columns_in_order(self, scientist_api, registered, onnx_path):
        csv_text = "area,rooms,city_code\n" + "".join(
            f"{10 * i},{i % 3},{i % 2}\n" for i in range(1, 21)
        )
        response = post(
            scientist_api,
            onnx_path(onnx_files.linear_regressor()),
            reference=as_upload(csv_text.encode(), "ref.csv", "text/csv"),
        )
        assert response.status_code == 201, response.json()
        version = ModelVersion.objects.get()
        profile = version.reference_profile
        assert profile["rows"] == 20
        assert profile["prediction"] is None
        assert [(f["name"], f["input"], f["index"], f["kind"]) for f in profile["features"]] == [
            ("area", "features", 0, "numeric"),
            ("rooms", "features", 1, "numeric"),
            ("city_code", "features", 2, "numeric"),
        ]
        assert profile["features"][1] == {
            "name": "rooms",
            "input": "features",
            "index": 1,
            "kind": "numeric",
            "edges": [0.0, 0.5, 1.5, 2.0],
            "counts": [6, 7, 7],
        }
        area = profile["features"][0]
        assert area["edges"][0] == 10.0 and area["edges"][-1] == 200.0
        assert len(area["edges"]) == 11 and sum(area["counts"]) == 20
        reference = version.artifacts.get(kind=ArtifactKind.REFERENCE)
        assert (reference.original_name, reference.content_type) == ("ref.csv", "text/csv")
        assert reference.size == len(csv_text)

    def test_several_inputs_need_headers_equal_to_input_names(
        self, scientist_api, registered, onnx_path
    ):
        path = onnx_path(onnx_files.two_inputs())
        rows = "".join(f"{'oslo' if i % 4 else 'paris'},{20 + i}\n" for i in range(40))
        response = post(
            scientist_api, path, reference=as_upload(f"city,age\n{rows}".encode(), "ref.csv")
        )
        assert response.status_code == 201, response.json()
        features = ModelVersion.objects.get().reference_profile["features"]
        assert features[0] == {
            "name": "city",
            "input": "city",
            "index": None,
            "kind": "categorical",
            "categories": {"oslo": 30, "paris": 10, "__other__": 0},
        }
        assert (features[1]["name"], features[1]["kind"], features[1]["index"]) == (
            "age",
            "numeric",
            None,
        )

    @pytest.mark.parametrize(
        ("csv_text", "message"),
        [
            (
                "a,b\n1,2\n",
                "The model's input 'features' has 3 columns but the reference CSV "
                "has 2; give one CSV column per input column, in order.",
            ),
            ("a,b,c\n1,2,x\n", "Reference CSV row 2, column 'c': 'x' is not a number."),
            ("a,b,c\n1,2\n", "Reference CSV row 2 has 2 values; the header has 3."),
            ("a,b,c\n", "The reference CSV has a header but no rows."),
            ("", "The reference CSV is empty."),
            ("a,a,c\n1,2,3\n", "The reference CSV names a column twice."),
            ("a,b,c\n1,2,\x00\n", "The reference CSV contains NUL bytes; it is not a text file."),
            (
                ",".join(f"c{i}" for i in range(1_001)) + "\n",
                "The reference CSV has 1,001 columns; the limit is 1,000.",
            ),
        ],
    )
    def test_bad_reference_is_refused_with_nothing_stored(
        self, scientist_api, registered, onnx_path, nothing_left_behind, csv_text, message
    ):
        response = post(
            scientist_api,
            onnx_path(onnx_files.linear_regressor()),
            reference=as_upload(csv_text.encode(), "ref.csv"),
        )
        assert response.status_code == 400
        assert response.json() == {"error": message, "detail": {"reference": [message]}}

    def test_non_utf8_reference_is_refused(
        self, scientist_api, registered, onnx_path, nothing_left_behind
    ):
        response = post(
            scientist_api,
            onnx_path(onnx_files.linear_regressor()),
            reference=as_upload("a,b,c\n1,2,é\n".encode("latin-1"), "ref.csv"),
        )
        assert response.json()["error"] == "The reference CSV is not UTF-8 text."

    def test_reference_size_cap(
        self, scientist_api, registered, onnx_path, nothing_left_behind, settings
    ):
        settings.MODELDECK_MAX_REFERENCE_BYTES = 100
        response = post(
            scientist_api,
            onnx_path(onnx_files.linear_regressor()),
            reference=as_upload(b"a,b,c\n" + b"1,2,3\n" * 100, "ref.csv"),
        )
        assert response.status_code == 413
        assert (
            response.json()["error"] == "The reference CSV is larger than the limit of 100 bytes."
        )


def test_service_accepts_files_from_disk(scientist_actor, registered, onnx_path):
    version = register(scientist_actor, registered, onnx_path(onnx_files.linear_regressor()))
    assert (version.number, version.status) == (1, "pending")
    assert version.model_artifact.original_name == "model.onnx"
