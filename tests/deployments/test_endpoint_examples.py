"""The endpoint page's curl and tritonclient examples are built from the serving version's
signature (or its reference rows) and run as shown against a live local endpoint."""

import json
import re
import subprocess
import sys
from html import unescape

import pytest

from deployments import services as deployment_services
from deployments import tasks as deployment_tasks
from registry.examples import curl_command, inference_example, tritonclient_snippet
from tests.deployments import conftest as deployment_fixtures

adder_model = deployment_fixtures.adder_model
versions = deployment_fixtures.versions
dev_target = deployment_fixtures.dev_target
runtime_processes = deployment_fixtures.runtime_processes


class FakeVersion:
    """Only what inference_example reads when there is no reference file."""

    def __init__(self, signature):
        self.signature = signature

    class artifacts:
        @staticmethod
        def filter(**kwargs):
            class Empty:
                @staticmethod
                def first():
                    return None

            return Empty


def test_the_example_body_follows_the_signature_shape_and_types():
    signature = {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "ids", "datatype": "INT64", "shape": [None]},
            {"name": "flag", "datatype": "BOOL", "shape": [2]},
        ]
    }
    example = inference_example(FakeVersion(signature))
    assert example == {
        "source": "signature",
        "body": {
            "inputs": [
                {"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [0.0] * 3},
                {"name": "ids", "datatype": "INT64", "shape": [1], "data": [0]},
                {"name": "flag", "datatype": "BOOL", "shape": [2], "data": [False, False]},
            ]
        },
    }
    python = tritonclient_snippet("http://127.0.0.1:9000", "m", example["body"])
    assert 'client = httpclient.InferenceServerClient("127.0.0.1:9000")' in python
    assert 'np.array([False, False], dtype="bool").reshape([2])' in python
    compile(python, "example", "exec")  # valid Python as shown
    assert inference_example(FakeVersion({"inputs": []})) is None
    huge = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3, 224, 224]}]}
    assert inference_example(FakeVersion(huge)) is None


def test_a_quote_in_the_body_keeps_the_curl_line_one_shell_word():
    line = curl_command("http://h:1", "m", {"inputs": [{"data": ["it's"]}]})
    words = subprocess.run(
        ["bash", "-c", f"printf '%s\\n' {line.split(' -d ', 1)[1]}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(words) == {"inputs": [{"data": ["it's"]}]}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_curl_on_the_endpoint_page_runs_as_shown(
    versions, dev_target, deployer, make_actor, runtime_processes, client
):
    endpoint = deployment_services.endpoint_create(
        actor=make_actor(deployer), name="example", target=dev_target, version="adder:1"
    )
    assert deployment_tasks.reconcile_endpoint(endpoint.pk) == "converged"
    client.force_login(deployer)
    html = client.get(f"/endpoints/{endpoint.name}/").content.decode()
    shown = re.search(r'<pre id="curl-example"><code>(.*?)</code></pre>', html, re.S)
    assert shown is not None
    command = unescape(shown.group(1))
    assert "[...]" not in command
    answer = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
    assert answer.returncode == 0, answer.stderr
    body = json.loads(answer.stdout)
    assert body["model_name"] == "example"
    assert body["outputs"][0]["shape"] == [1, 1]
    python = re.search(r'<pre id="tritonclient-example"><code>(.*?)</code>', html, re.S)
    ran = subprocess.run(
        [sys.executable, "-c", unescape(python.group(1))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    assert "'model_name': 'example'" in ran.stdout
