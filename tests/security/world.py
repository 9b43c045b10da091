"""A team with one object of every kind, and every route filled with that team's real values.

Cross-team, role and page tests walk `routes_with_values(world)`: a route added by anyone shows
up there, and a route parameter nobody taught `PARAMETERS` makes `test_every_route_parameter_is
_known` fail, so a new object type cannot slip past the access tests unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from django.apps import apps
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from accounts.actor import Actor
from accounts.models import ApiToken
from accounts.services import token_create
from deployments import services as deployment_services
from deployments.access import endpoint_key_create
from deployments.models import Build, Environment, Target, TargetKind
from edge import services as edge_services
from events import services as events_services
from events.models import EventKind
from monitoring import services as monitoring_services
from registry import services as registry_services
from registry.models import ArtifactKind, ModelVersion, RegisteredModel
from tests.factories import ModelVersionFactory

# What a user can type and the pages show, per field; each payload names its field so a test
# can check that the field really reaches a page (escaped) and not only that nothing is raw.
XSS = '"><img src=x onerror=alert("{field}")><script>alert("{field}")</script>'


def xss(field_name: str) -> str:
    return XSS.format(field=field_name)


@dataclass
class World:
    """The objects of `team` the route walk fills in."""

    team: object
    owner: object
    model: RegisteredModel
    version: ModelVersion
    alias: str
    target: Target
    endpoint: object
    build: Build
    webhook: object
    rule: object
    token: ApiToken
    fleet: Target | None = None
    fleet_endpoint: object = None
    device: object = None
    device_token: str = ""
    rollout: object = None
    batch_job: object = None
    optimization: object = None
    experiment: object = None
    policy: object = None
    values: dict = field(default_factory=dict)


def stored_version(model: RegisteredModel, number: int, **fields) -> ModelVersion:
    """A ready, approved version with a real ONNX file in artifact storage."""
    return ModelVersionFactory(
        model=model, number=number, artifact__original_name=xss("original_name"), **fields
    )


def build_world(team, owner) -> World:
    """Every kind of object, made through the services, with hostile text where users type."""
    actor = Actor(user=owner, label=owner.get_username(), ip="127.0.0.1", roles={team.pk: "admin"})
    model = registry_services.model_create(
        actor=actor,
        team=team,
        name="secret-model",
        description=xss("description"),
        tags={"stage": xss("tag_value"), "team": "a"},
    )
    first = stored_version(model, 1, metrics={"accuracy": 0.9}, params={"depth": xss("param")})
    version = stored_version(
        model, 2, source="https://example.com/" + "x", approval_comment=xss("approval_comment")
    )
    registry_services.alias_set(
        actor=actor, model=model, name="production", version_number=1, reason=xss("alias_reason")
    )
    target = deployment_services.target_create(
        actor=actor,
        team=team,
        name="secret-target",
        kind=TargetKind.LOCAL,
        environment=Environment.DEV,
        config={"threads": 1},
        description=xss("target_description"),
    )
    endpoint = deployment_services.endpoint_create(
        actor=actor, name="secret-endpoint", target=target, version=first, note=xss("note")
    )
    deployment_services.endpoint_deploy(
        actor=actor, endpoint=endpoint, version=version, weight=20, note=xss("deploy_note")
    )
    endpoint.refresh_from_db()
    endpoint_key, _plain = endpoint_key_create(actor=actor, endpoint=endpoint, name=xss("key"))
    build = Build.objects.create(
        version=version, target=target, base_image="python:3.11-slim", log=xss("build_log")
    )
    webhook = events_services.webhook_create(
        actor=actor,
        team=team,
        name=xss("webhook_name")[:100],
        url="https://hooks.example.com/modeldeck",
        events=[EventKind.ALERT_OPENED],
    )
    rule = monitoring_services.alert_rule_create(
        actor=actor,
        endpoint=endpoint,
        name=xss("rule_name")[:100],
        metric="error_rate",
        threshold=0.5,
    )
    token, _plain = token_create(actor=actor, user=owner, team=team, name=xss("token_name")[:100])
    features = build_feature_world(actor, team, model, first, version, endpoint)
    world = World(
        team=team,
        owner=owner,
        model=model,
        version=version,
        alias="production",
        target=target,
        endpoint=endpoint,
        build=build,
        webhook=webhook,
        rule=rule,
        token=token,
        **features,
    )
    world.values = {
        ("tokens", "pk"): token.pk,
        ("models", "name"): model.name,
        ("models", "model_name"): model.name,
        ("aliases", "alias"): "production",
        ("versions", "number"): version.number,
        ("files", "kind"): ArtifactKind.MODEL.value,
        ("endpoints", "name"): endpoint.name,
        ("keys", "key_id"): endpoint_key.pk,
        ("builds", "build_id"): build.pk,
        ("builds", "pk"): build.pk,
        ("rules", "pk"): rule.pk,
        ("webhooks", "pk"): webhook.pk,
        ("releases", "number"): endpoint.desired_release.number,
        # Edge devices download a version's model by id (device-token routes): the one the
        # world's device is told to serve.
        ("artifacts", "version_id"): world.device.desired_version_id,
        # The fleet API lives under /api/v1/targets/{name}/ too: the fleet is a target.
        ("targets", "name"): world.fleet.name,
        ("fleet", "name"): world.fleet.name,
        ("devices", "device"): world.device.name,
        ("rollouts", "rollout_id"): world.rollout.pk,
        # /fleet/{name}/rollouts/{rollout_id}/{action}/: cancel (retry has its own test).
        ("{rollout_id}", "action"): "cancel",
        ("batch-jobs", "pk"): world.batch_job.pk,
        ("_batch", "job_id"): world.batch_job.pk,  # pages under /models/_batch/ (before)
        ("batch-jobs", "job_id"): world.batch_job.pk,  # pages under /batch-jobs/ (after)
        ("experiments", "pk"): world.experiment.pk,
    }
    return world


# A CSV the world's versions (one FP32 input `x`) can score.
BATCH_CSV = b"id,x\n1,1.0\n2,2.0\n"


def build_feature_world(actor, team, model, first, version, endpoint) -> dict:
    """Edge fleet (endpoint, enrolled device, rollout), batch job, optimization, experiment,
    rollback policy, prediction log and feedback, all through their services."""
    fleet = deployment_services.target_create(
        actor=actor,
        team=team,
        name="secret-fleet",
        kind=TargetKind.EDGE,
        environment=Environment.PRODUCTION,
        config={},
        description=xss("fleet_description"),
    )
    fleet_endpoint = deployment_services.endpoint_create(
        actor=actor,
        name="secret-fleet-serving",
        target=fleet,
        version=first,
        note=xss("fleet_note"),
    )
    _code, plain = edge_services.enrollment_code_create(
        actor=actor, target=fleet, labels={"site": xss("device_label")[:63]}
    )
    device, device_token, _key = edge_services.device_enroll(code=plain, name="secret-device")
    edge_services.device_heartbeat_record(
        device=device,
        payload={
            "agent_version": xss("agent")[:40],
            "state": {
                "health": "ok",
                "current_version": first.reference,
                "applied_sequence": device.desired_sequence,
                "reason": xss("device_reason"),
            },
            "summaries": [],
        },
    )
    device.refresh_from_db()
    rollout = edge_services.edge_rollout_create(
        actor=actor,
        target=fleet,
        version=version.reference,
        waves=[{"percent": 50}, {"percent": 100}],
        note=xss("rollout_note"),
    )
    device.refresh_from_db()  # the first wave may have moved it
    batch_job = registry_services.batch_job_create(
        actor=actor,
        version_reference=first.reference,
        # Upload names lose everything up to the last "/", so no closing tags in this one.
        file=SimpleUploadedFile(xss("input_name").split("<script>")[0], BATCH_CSV, "text/csv"),
    )
    optimization = registry_services.version_optimize(actor=actor, version=first)
    experiment = monitoring_services.experiment_create(
        actor=actor,
        endpoint=endpoint,
        name=xss("experiment_name")[:100],
        description=xss("experiment_description"),
        control=first,
        treatment=version,
        metric="accuracy",
        minimum_effect=0.05,
    )
    policy = monitoring_services.rollback_policy_set(
        actor=actor,
        endpoint=endpoint,
        criteria=[{"metric": "error_rate", "threshold": 0.2}],
        dry_run=True,
    )
    now = timezone.now().timestamp()
    monitoring_services.prediction_records_ingest(
        endpoint=endpoint,
        records=[
            {
                "request_id": f"req-{n}",
                "version": version.reference,
                "role": "candidate",
                "time": now,
                "status": 200,
                "latency": 0.01,
                "output": [1.0],
                "predicted_class": xss("predicted_class")[:100],
            }
            for n in (1, 2)
        ],
    )
    # req-1 has its label; req-2 is left for a permitted caller to label.
    monitoring_services.feedback_record(
        actor=actor,
        endpoint=endpoint,
        items=[{"request_id": "req-1", "label": xss("feedback_label")[:100]}],
    )
    monitoring_services.prediction_log_configure(
        actor=actor, endpoint=endpoint, input_sample_percent=5
    )
    return {
        "fleet": fleet,
        "fleet_endpoint": fleet_endpoint,
        "device": device,
        "device_token": device_token,
        "rollout": rollout,
        "batch_job": batch_job,
        "optimization": optimization,
        "experiment": experiment,
        "policy": policy,
    }


# --- routes ------------------------------------------------------------------------------------

_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")
_CONVERTER = re.compile(r"<(?:\w+:)?(\w+)>")


@dataclass(frozen=True)
class Route:
    """One URL pattern: its template with `{parameter}` holes, and what answers it."""

    template: str
    view: str
    methods: frozenset  # HTTP methods the view declares (empty = not declared: any)

    @property
    def parameters(self) -> list[tuple[str, str]]:
        """(preceding literal segment, parameter name) for every hole."""
        found = []
        segments = self.template.strip("/").split("/")
        for index, segment in enumerate(segments):
            match = re.fullmatch(r"\{(\w+)\}", segment)
            if match:
                found.append((segments[index - 1] if index else "", match.group(1)))
        return found

    def fill(self, values: dict) -> str:
        path = self.template
        for key in self.parameters:
            path = path.replace("{" + key[1] + "}", str(values[key]), 1)
        return path

    @property
    def is_api(self) -> bool:
        return self.template.startswith("/api/")

    @property
    def is_page(self) -> bool:
        return not self.template.startswith(("/api/", "/admin/", "/static/"))


def _methods(callback) -> frozenset:
    actions = getattr(callback, "actions", None)
    if actions:
        return frozenset(method.upper() for method in actions)
    cls = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    if cls is not None:
        names = [
            m for m in cls.http_method_names if m not in ("options", "head") and hasattr(cls, m)
        ]
        return frozenset(m.upper() for m in names)
    return frozenset()


def _walk(patterns, prefix=""):
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            template = _GROUP.sub(lambda m: "{" + m.group(1) + "}", route)
            template = _CONVERTER.sub(lambda m: "{" + m.group(1) + "}", template)
            template = "/" + template.replace("^", "").replace("$", "").replace("\\", "")
            name = getattr(pattern.callback, "__name__", "")
            yield Route(template, name, _methods(pattern.callback))


def project_routes() -> list[Route]:
    """Every route of the project except the admin, static files and format-suffix variants."""
    routes = {}
    for route in _walk(get_resolver().url_patterns):
        if route.template.startswith(("/admin/", "/static/")) or "(" in route.template:
            continue
        if "." in route.template.rsplit("/", 1)[-1]:
            continue
        routes.setdefault(route.template, route)
    return sorted(routes.values(), key=lambda r: r.template)


def object_routes() -> list[Route]:
    """Routes that name one object (and so must answer 404 to other teams)."""
    return [route for route in project_routes() if route.parameters]


# --- "nothing changed" ----------------------------------------------------------------------

# Rows that a refused request may legitimately write: the audit trail, login sessions, and the
# caller's own token bookkeeping.
_VOLATILE_MODELS = {"accounts.auditevent", "sessions.session"}
_VOLATILE_FIELDS = {"last_used_at", "last_login"}
_APPS = ("accounts", "events", "registry", "deployments", "edge", "monitoring", "auth")


def snapshot() -> dict:
    """Every row of every Modeldeck model, as JSON text (volatile fields out)."""
    state = {}
    for app_label in _APPS:
        for model in apps.get_app_config(app_label).get_models():
            label = model._meta.label_lower
            if label in _VOLATILE_MODELS:
                continue
            rows = []
            for row in model.objects.order_by("pk").values():
                rows.append({k: v for k, v in row.items() if k not in _VOLATILE_FIELDS})
            state[label] = json.dumps(rows, default=str, sort_keys=True)
    return state


def changed_tables(before: dict, after: dict) -> list[str]:
    return sorted(label for label in before if before[label] != after.get(label))


def file_tree_digest(root) -> str:
    """A digest of every file name and size under `root` (artifact storage)."""
    from pathlib import Path

    root = Path(root)
    if not root.exists():
        return ""
    entries = sorted(
        f"{path.relative_to(root)}:{path.stat().st_size}"
        for path in root.rglob("*")
        if path.is_file()
    )
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()
