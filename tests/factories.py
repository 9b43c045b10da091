"""factory_boy factories shared by every test module: people and teams, registered models and
ready versions (with a real ONNX file in artifact storage), targets, endpoints."""

import hashlib

import factory
import onnx
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from onnx import TensorProto, helper

from accounts.models import Membership, Role, Team
from deployments.models import Endpoint, Environment, Release, Target, TargetKind
from registry.models import Approval, Artifact, ArtifactKind, ModelVersion, RegisteredModel
from registry.storage import artifact_storage, new_storage_key


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("correct horse battery staple")


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team
        django_get_or_create = ["name"]

    name = factory.Sequence(lambda n: f"team-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    team = factory.SubFactory(TeamFactory)
    role = Role.SCIENTIST


# --- registry ----------------------------------------------------------------------------------


def onnx_adder(number: int) -> bytes:
    """A model whose answer names its version: y = x + number, x float [N, 1]."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "offset"], ["y"])],
        "adder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        initializer=[helper.make_tensor("offset", TensorProto.FLOAT, [1], [float(number)])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


# The signature of onnx_adder (and of every x float [N, 1] → y float [N, 1] test model).
XY_SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
}


class RegisteredModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RegisteredModel
        django_get_or_create = ["name"]

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"model-{n}")


class ModelVersionFactory(factory.django.DjangoModelFactory):
    """A ready, approved version whose model file is stored like an upload's.

    `artifact=<bytes>` stores that ONNX file (default: `onnx_adder(number)`); `artifact=False`
    stores none; `artifact__original_name="…"` names the uploaded file.
    """

    class Meta:
        model = ModelVersion
        skip_postgeneration_save = True

    model = factory.SubFactory(RegisteredModelFactory)
    number = factory.Sequence(lambda n: n + 1)
    status = "ready"
    approval = Approval.APPROVED
    signature = factory.LazyFunction(lambda: {k: list(v) for k, v in XY_SIGNATURE.items()})

    @factory.post_generation
    def artifact(version, create, extracted, original_name: str = "", **kwargs):
        if not create or extracted is False:
            return
        content = extracted if extracted is not None else onnx_adder(version.number)
        key = new_storage_key(model_id=version.model_id, kind=ArtifactKind.MODEL)
        artifact_storage().save(key, ContentFile(content))
        Artifact.objects.create(
            version=version,
            kind=ArtifactKind.MODEL,
            storage_key=key,
            size=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            content_type="application/octet-stream",
            original_name=original_name,
        )
        RegisteredModel.objects.filter(
            pk=version.model_id, last_version_number__lt=version.number
        ).update(last_version_number=version.number)


# --- deployments -------------------------------------------------------------------------------


class TargetFactory(factory.django.DjangoModelFactory):
    """A local target (one thread per server) of a team."""

    class Meta:
        model = Target
        django_get_or_create = ["name"]

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"target-{n}")
    kind = TargetKind.LOCAL
    environment = Environment.DEV
    config = factory.LazyFunction(lambda: {"threads": 1})


class EndpointFactory(factory.django.DjangoModelFactory):
    """An endpoint on a target of its team. `variants=[(version, weight, role), …]` also writes
    release 1 serving them, as desired and live release."""

    class Meta:
        model = Endpoint
        skip_postgeneration_save = True

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"endpoint-{n}")
    target = factory.SubFactory(TargetFactory, team=factory.SelfAttribute("..team"))

    @factory.post_generation
    def variants(endpoint, create, extracted, **kwargs):
        if not create or not extracted:
            return
        release = Release.objects.create(
            endpoint=endpoint,
            number=1,
            reason="deploy",
            actor_label="tests",
            variants=[
                {
                    "version_id": version.pk,
                    "version": version.reference,
                    "weight": weight if role != "shadow" else 0,
                    "role": role,
                    "mirror_percent": weight if role == "shadow" else 0,
                }
                for version, weight, role in extracted
            ],
        )
        Endpoint.objects.filter(pk=endpoint.pk).update(
            desired_release=release, live_release=release
        )
        endpoint.refresh_from_db()
