"""A fake Kubernetes API server on 127.0.0.1 for the driver tests.

It speaks the request and response shapes of the calls the driver makes, for namespaced
apps/v1 Deployments, v1 Services, ConfigMaps and Secrets, autoscaling/v2
HorizontalPodAutoscalers, policy/v1 PodDisruptionBudgets and gateway.networking.k8s.io/v1
HTTPRoutes: server-side apply (PATCH, `application/apply-patch+yaml`, `fieldManager` required),
GET of one object (with status), LIST with an equality `labelSelector`, DELETE, and DELETE of a
collection by label. Objects live in memory; an apply stores the applied configuration as the
whole object (server-side apply semantics for a single manager), keeps uid, creation time and
status, bumps `metadata.generation` when the spec changes and `resourceVersion` when anything
does, and honours a `metadata.resourceVersion` precondition with 409 Conflict.

Rollouts: with `auto_rollout` (the default) an applied Deployment immediately reports a finished
rollout; with it off, status stays as it was until the test calls `set_deployment_status`.
HTTPRoutes likewise are accepted by a pretend Gateway controller while `auto_accept` is on.
An applied Deployment without `spec.replicas` keeps the count it had (as server-side apply
keeps a field another manager, the autoscaler, owns); `scale_deployment` plays the autoscaler.
Every request is recorded (method, path, query, content type, parsed body).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

TOKEN = "fake-cluster-token"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[a-z0-9.-]+)/(?P<version>v[0-9]+))"
    r"/namespaces/(?P<namespace>[a-z0-9-]+)/(?P<resource>[a-z]+)(?:/(?P<name>[a-z0-9.-]+))?$"
)
# (group, resource) -> (apiVersion, kind)
RESOURCES = {
    ("apps", "deployments"): ("apps/v1", "Deployment"),
    ("", "services"): ("v1", "Service"),
    ("", "configmaps"): ("v1", "ConfigMap"),
    ("", "secrets"): ("v1", "Secret"),
    ("gateway.networking.k8s.io", "httproutes"): ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("autoscaling", "horizontalpodautoscalers"): ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy", "poddisruptionbudgets"): ("policy/v1", "PodDisruptionBudget"),
}
KIND_RESOURCES = {value[1]: key for key, value in RESOURCES.items()}
GENERATED_KINDS = {"Deployment", "HTTPRoute"}


@dataclass
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any = None
    authorization: str = ""


@dataclass
class FakeKubernetes:
    """The in-memory cluster and its HTTP server."""

    token: str = TOKEN
    auto_rollout: bool = True
    auto_accept: bool = True
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.version_counter = 100
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def write_kubeconfig(self, path: Path, *, namespace: str = "default") -> Path:
        """A kubeconfig whose context "fake" points here; "elsewhere" points at nothing."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "fake", "cluster": {"server": self.url}},
                {"name": "elsewhere", "cluster": {"server": "http://127.0.0.1:9"}},
            ],
            "users": [{"name": "tester", "user": {"token": self.token}}],
            "contexts": [
                {"name": "fake", "context": {"cluster": "fake", "user": "tester"}},
                {"name": "elsewhere", "context": {"cluster": "elsewhere", "user": "tester"}},
            ],
            "current-context": "elsewhere",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # --- what tests read and set ---

    def get(self, kind: str, name: str, namespace: str = "default") -> dict[str, Any] | None:
        with self.lock:
            stored = self.objects.get((kind, namespace, name))
            return copy.deepcopy(stored) if stored is not None else None

    def names(self, kind: str, namespace: str = "default") -> list[str]:
        with self.lock:
            return sorted(n for (k, ns, n) in self.objects if k == kind and ns == namespace)

    def set_deployment_status(self, name: str, namespace: str = "default", **status: Any) -> None:
        with self.lock:
            self.objects[("Deployment", namespace, name)]["status"] = status

    def finish_rollout(self, name: str, namespace: str = "default") -> None:
        with self.lock:
            _finish_rollout(self.objects[("Deployment", namespace, name)])

    def scale_deployment(self, name: str, replicas: int, namespace: str = "default") -> None:
        """What an autoscaler does: set the replica count (the rollout follows if automatic)."""
        with self.lock:
            deployment = self.objects[("Deployment", namespace, name)]
            deployment["spec"]["replicas"] = replicas
            deployment["metadata"]["generation"] += 1
            deployment["metadata"]["resourceVersion"] = self._next_version()
            if self.auto_rollout:
                _finish_rollout(deployment)

    def accept_route(self, name: str, namespace: str = "default") -> None:
        with self.lock:
            _accept(self.objects[("HTTPRoute", namespace, name)])

    def take_requests(self) -> list[RecordedRequest]:
        """The requests since the last call."""
        with self.lock:
            taken, self.requests = self.requests, []
        return taken

    def applied(self, requests: list[RecordedRequest] | None = None) -> dict[tuple[str, str], dict]:
        """(kind, name) -> the last configuration applied to it."""
        result = {}
        for request in self.requests if requests is None else requests:
            if request.method == "PATCH":
                result[(request.body["kind"], request.body["metadata"]["name"])] = request.body
        return result

    # --- the API ---

    def _next_version(self) -> str:
        self.version_counter += 1
        return str(self.version_counter)

    def handle(self, request: RecordedRequest) -> tuple[int, dict[str, Any]]:
        if request.authorization != f"Bearer {self.token}":
            return 401, _status(401, "Unauthorized", "Unauthorized")
        match = PATH.match(request.path)
        if match is None:
            return 404, _status(404, "NotFound", f"the server could not find {request.path}")
        group = match["group"] or ""
        kind_info = RESOURCES.get((group, match["resource"]))
        if kind_info is None:
            return 404, _status(404, "NotFound", f"the server could not find {request.path}")
        api_version, kind = kind_info
        namespace, name = match["namespace"], match["name"]
        with self.lock:
            if request.method == "GET" and name:
                stored = self.objects.get((kind, namespace, name))
                if stored is None:
                    return 404, _status(404, "NotFound", f'{kind} "{name}" not found')
                return 200, copy.deepcopy(stored)
            if request.method == "GET":
                items = self._select(kind, namespace, request.query.get("labelSelector", ""))
                return 200, _list(api_version, kind, items, self._next_version())
            if request.method == "PATCH" and name:
                return self._apply(request, api_version, kind, namespace, name)
            if request.method == "DELETE" and name:
                if self.objects.pop((kind, namespace, name), None) is None:
                    return 404, _status(404, "NotFound", f'{kind} "{name}" not found')
                return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
            if request.method == "DELETE":
                selector = request.query.get("labelSelector", "")
                items = self._select(kind, namespace, selector)
                for item in items:
                    del self.objects[(kind, namespace, item["metadata"]["name"])]
                return 200, _list(api_version, kind, items, self._next_version())
        return 405, _status(405, "MethodNotAllowed", f"{request.method} is not allowed here")

    def _select(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        terms = dict(term.split("=", 1) for term in selector.split(",") if term)
        items = []
        for (stored_kind, stored_namespace, _), stored in sorted(self.objects.items()):
            labels = stored["metadata"].get("labels") or {}
            if stored_kind != kind or stored_namespace != namespace:
                continue
            if all(labels.get(key) == value for key, value in terms.items()):
                item = copy.deepcopy(stored)
                # List items carry no apiVersion or kind of their own, as the API server sends.
                item.pop("apiVersion", None)
                item.pop("kind", None)
                items.append(item)
        return items

    def _apply(
        self, request: RecordedRequest, api_version: str, kind: str, namespace: str, name: str
    ) -> tuple[int, dict[str, Any]]:
        if request.content_type != APPLY_CONTENT_TYPE:
            return 415, _status(415, "UnsupportedMediaType", "expected an apply patch")
        if not request.query.get("fieldManager"):
            return 400, _status(400, "BadRequest", "fieldManager is required for apply")
        body = request.body
        if not isinstance(body, dict):
            return 400, _status(400, "BadRequest", "the apply patch is not an object")
        metadata = body.get("metadata") or {}
        if body.get("apiVersion") != api_version or body.get("kind") != kind:
            return 400, _status(400, "BadRequest", "apiVersion or kind does not match the URL")
        if metadata.get("name") != name or metadata.get("namespace", namespace) != namespace:
            return 400, _status(400, "BadRequest", "the name or namespace does not match the URL")
        key = (kind, namespace, name)
        existing = self.objects.get(key)
        precondition = metadata.get("resourceVersion")
        if precondition is not None and (
            existing is None or existing["metadata"]["resourceVersion"] != precondition
        ):
            return 409, _status(409, "Conflict", "the object has been modified")
        applied = copy.deepcopy(body)
        applied["metadata"].pop("resourceVersion", None)
        applied["metadata"]["namespace"] = namespace
        if kind == "Deployment" and "replicas" not in applied.get("spec", {}):
            applied["spec"]["replicas"] = (existing or {}).get("spec", {}).get("replicas", 1)
        if kind == "Secret" and "stringData" in applied:
            data = applied.setdefault("data", {})
            for secret_key, value in applied.pop("stringData").items():
                data[secret_key] = base64.b64encode(value.encode()).decode()
        if kind == "Service":
            cluster_ip = (existing or {}).get("spec", {}).get("clusterIP")
            applied["spec"]["clusterIP"] = cluster_ip or f"10.96.0.{len(self.objects) % 250 + 2}"
        if existing is None:
            applied["metadata"].update(
                uid=str(uuid.uuid4()),
                creationTimestamp="2026-01-01T00:00:00Z",
                resourceVersion=self._next_version(),
            )
            if kind in GENERATED_KINDS:
                applied["metadata"]["generation"] = 1
            status_code = 201
        else:
            for server_field in ("uid", "creationTimestamp", "resourceVersion", "generation"):
                if server_field in existing["metadata"]:
                    applied["metadata"][server_field] = existing["metadata"][server_field]
            if "status" in existing:
                applied["status"] = existing["status"]
            if kind in GENERATED_KINDS and applied.get("spec") != existing.get("spec"):
                applied["metadata"]["generation"] = existing["metadata"]["generation"] + 1
            if applied != existing:
                applied["metadata"]["resourceVersion"] = self._next_version()
            status_code = 200
        if kind == "Deployment" and self.auto_rollout:
            _finish_rollout(applied)
        if kind == "HTTPRoute" and self.auto_accept:
            _accept(applied)
        self.objects[key] = applied
        return status_code, copy.deepcopy(applied)


def _finish_rollout(deployment: dict[str, Any]) -> None:
    replicas = deployment["spec"].get("replicas", 1)
    deployment["status"] = {
        "observedGeneration": deployment["metadata"]["generation"],
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    }


def _accept(route: dict[str, Any]) -> None:
    generation = route["metadata"]["generation"]
    route["status"] = {
        "parents": [
            {
                "parentRef": parent,
                "controllerName": "example.com/fake-gateway",
                "conditions": [
                    {
                        "type": kind,
                        "status": "True",
                        "reason": kind,
                        "message": "",
                        "observedGeneration": generation,
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                    for kind in ("Accepted", "ResolvedRefs")
                ],
            }
            for parent in route["spec"].get("parentRefs", [])
        ]
    }


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _list(api_version: str, kind: str, items: list, version: str) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": f"{kind}List",
        "metadata": {"resourceVersion": version},
        "items": items,
    }


def _handler_for(cluster: FakeKubernetes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # One buffered write per answer and no Nagle delay: keep-alive requests stay fast.
        disable_nagle_algorithm = True
        wbufsize = 64 * 1024

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            content_type = self.headers.get("Content-Type", "")
            body = None
            if raw:
                body = (
                    yaml.safe_load(raw) if content_type == APPLY_CONTENT_TYPE else json.loads(raw)
                )
            request = RecordedRequest(
                method=self.command,
                path=parts.path,
                query={key: values[-1] for key, values in parse_qs(parts.query).items()},
                content_type=content_type,
                body=body,
                authorization=self.headers.get("Authorization", ""),
            )
            with cluster.lock:
                cluster.requests.append(request)
            status, answer = cluster.handle(request)
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_PATCH = do_DELETE = do_POST = do_PUT = _serve

    return Handler
