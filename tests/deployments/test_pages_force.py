"""The endpoint page's traffic, promote and rollback forms: a change the signature check refuses
shows the diff beside the form, and deployers (only) get a force box that posts it again."""

import html
import re

import onnx
import pytest
from django.test import Client
from onnx import TensorProto, helper

from accounts.models import AuditEvent
from deployments import services
from deployments.models import Release
from registry.models import RegisteredModel
from registry.validation import check_session
from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db


def onnx_features() -> bytes:
    """Another model: y = features * 2, its input named 'features' (adder's is 'x')."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["features", "two"], ["y"])],
        "doubler",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        initializer=[helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture
def house(team, tmp_path):
    """house:1, a real ONNX model whose signature (read by onnxruntime) breaks adder's clients."""
    content = onnx_features()
    path = tmp_path / "house.onnx"
    path.write_bytes(content)
    signature, _timings, _smoke = check_session(path)
    model = RegisteredModel.objects.create(team=team, name="house")
    return ModelVersionFactory(model=model, number=1, artifact=content, signature=signature)


@pytest.fixture
def endpoint(versions, house, dev_target, deployer, make_actor):
    actor = make_actor(deployer)
    return services.endpoint_create(
        actor=actor, name="adder-web", target=dev_target, version="adder:1"
    )


def _traffic(endpoint, actor):
    """house:1 mirrored as a shadow (not checked); making it the candidate is refused."""
    split = [
        {"version": "adder:1", "weight": 100, "role": "primary"},
        {"version": "house:1", "weight": 10, "role": "shadow"},
    ]
    services.endpoint_set_traffic(actor=actor, endpoint=endpoint, variants=split)
    fields = {"version_0": "adder:1", "weight_0": 90, "role_0": "primary"}
    fields |= {"version_1": "house:1", "weight_1": 10, "role_1": "candidate"}
    return "traffic/", fields, "house:1 does not fit what this endpoint serves (adder:1)"


def _promote(endpoint, actor):
    """house:1 forced in as the candidate; promoting it is refused."""
    split = [
        {"version": "adder:1", "weight": 90, "role": "primary"},
        {"version": "house:1", "weight": 10, "role": "candidate"},
    ]
    services.endpoint_set_traffic(actor=actor, endpoint=endpoint, variants=split, force=True)
    return "promote/", {}, "house:1 does not fit what this endpoint serves (adder:1)"


def _rollback(endpoint, actor):
    """house:1 forced in at 100 %; rolling back to adder:1 breaks house's clients."""
    services.endpoint_deploy(actor=actor, endpoint=endpoint, version="house:1", force=True)
    return "rollback/", {"release": 1}, "adder:1 does not fit what this endpoint serves (house:1)"


ACTIONS = {"traffic": _traffic, "promote": _promote, "rollback": _rollback}


def _browser(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def _post(client: Client, path: str, fields: dict):
    page = client.get("/endpoints/adder-web/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    return client.post(f"/endpoints/adder-web/{path}", {"csrfmiddlewaretoken": token, **fields})


def _refused_box(page: str) -> str:
    return re.search(r'<div class="callout signature-refused".*?</div>', page, re.S).group(0)


def _state():
    return Release.objects.count(), AuditEvent.objects.count()


@pytest.mark.parametrize("action", ACTIONS)
def test_a_refused_change_shows_the_diff_and_a_deployer_forces_it(
    action, endpoint, deployer, make_actor
):
    path, fields, diff = ACTIONS[action](endpoint, make_actor(deployer))
    browser = _browser(deployer)
    before = _state()
    refused = _post(browser, path, fields)
    assert refused.status_code == 400
    box = html.unescape(_refused_box(refused.content.decode()))
    assert diff in box
    assert "- input 'x' (FP32 [?, 1]) is " in box and "- input 'features' (FP32 [?, 1]) is " in box
    assert _state() == before
    # The force form posts the same fields again; its confirmation names the force.
    assert f'action="/endpoints/adder-web/{path}"' in box
    assert 'data-confirm="Force ' in box and "Existing clients may break" in box
    assert 'name="force"' in box and "js/endpoint-force.js" in box
    resend = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', box))
    assert {key: str(value) for key, value in fields.items()}.items() <= resend.items()
    forced = browser.post(f"/endpoints/adder-web/{path}", {**resend, "force": "on"})
    assert forced.status_code == 302
    assert Release.objects.count() == before[0] + 1
    audit = AuditEvent.objects.filter(action=f"endpoint.{action}").latest("id")
    assert audit.data["forced"] is True
    assert audit.data["signature_problems"]


@pytest.mark.parametrize("action", ACTIONS)
def test_a_scientist_sees_the_diff_but_no_force_option(
    action, endpoint, deployer, scientist, make_actor
):
    path, fields, diff = ACTIONS[action](endpoint, make_actor(deployer))
    browser = _browser(scientist)
    before = _state()
    refused = _post(browser, path, fields)
    assert refused.status_code == 400
    page = refused.content.decode()
    assert diff in html.unescape(_refused_box(page))
    assert 'name="force"' not in page  # neither beside the refused form nor on the deploy form
    assert "Only a deployer of the team can force" in page
    assert _post(browser, path, {**fields, "force": "on"}).status_code == 403
    assert _state() == before
