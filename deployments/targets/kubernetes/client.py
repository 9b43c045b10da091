"""A small, path-based wrapper over the official client's ApiClient: server-side apply, get,
list by label, delete and delete-by-label, for the few kinds Modeldeck manages.

Server-side apply is a PATCH with `Content-Type: application/apply-patch+yaml`,
`fieldManager=modeldeck` and `force=true` (Modeldeck owns these objects outright). The typed API
classes choose a merge-patch content type on their own, so requests are built with
`ApiClient.param_serialize` and sent with `ApiClient.call_api`, which keep the kubeconfig's
authentication (tokens, client certificates, exec plugins) and TLS settings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from common.credentials import CredentialError, credential_file, credential_file_from_environment
from deployments.targets.base import DriverError
from deployments.targets.kubernetes.config import KubernetesSettings

FIELD_MANAGER = "modeldeck"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
# (connect, read) seconds for one API request.
REQUEST_TIMEOUT = (5, 30)

# kind -> (API prefix, resource): the only kinds the driver touches.
RESOURCES = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Service": ("/api/v1", "services"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "Secret": ("/api/v1", "secrets"),
    "HTTPRoute": ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
}


class KubernetesApiError(DriverError):
    """The API server refused a request; `status` is its HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def label_selector(labels: Mapping[str, str]) -> str:
    """`key=value,…` for the labelSelector query parameter (equality terms only)."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def api_client_for(settings: KubernetesSettings):
    """An ApiClient for the target's cluster, from its kubeconfig (by path) or in-cluster."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    try:
        if settings.in_cluster:
            config.load_incluster_config(client_configuration=configuration)
        else:
            path = credential_file(settings.kubeconfig) if settings.kubeconfig else None
            if settings.kubeconfig_env:
                if not os.environ.get(settings.kubeconfig_env, ""):
                    raise DriverError(
                        f"The environment variable {settings.kubeconfig_env} (the kubeconfig "
                        "path) is not set on this worker."
                    )
                # Checked again here: the variable's value is only known on the worker.
                path = credential_file_from_environment(settings.kubeconfig_env)
            config.load_kube_config(
                config_file=path,
                context=settings.context or None,
                client_configuration=configuration,
                persist_config=False,
            )
    except CredentialError as error:
        raise DriverError(f"The kubeconfig path {error}") from None
    except (ConfigException, OSError, ValueError, TypeError, KeyError) as error:
        raise DriverError(f"Could not load the Kubernetes configuration: {error}") from None
    # Fail fast: the reconciler retries whole runs, not single requests.
    configuration.retries = 1
    return client.ApiClient(configuration)


class KubernetesApi:
    """Namespaced requests for one target; every failure is a KubernetesApiError."""

    def __init__(self, api_client, namespace: str) -> None:
        self.api_client = api_client
        self.namespace = namespace

    def close(self) -> None:
        """Release the connection pool."""
        self.api_client.close()

    # --- plumbing ---

    def path(self, kind: str, name: str | None = None) -> str:
        """The namespaced URL path of a kind's collection, or of one object."""
        prefix, resource = RESOURCES[kind]
        path = f"{prefix}/namespaces/{self.namespace}/{resource}"
        return f"{path}/{name}" if name is not None else path

    def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        missing_ok: bool = False,
    ) -> dict[str, Any] | None:
        """Send one request; the decoded JSON answer, or None for a 404 when `missing_ok`."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        try:
            serialized = self.api_client.param_serialize(
                method=method,
                resource_path=path,
                query_params=list(query or []),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            method, url, header_params, request_body, _ = serialized
            response = self.api_client.call_api(
                method,
                url,
                header_params=header_params,
                body=request_body,
                _request_timeout=REQUEST_TIMEOUT,
            )
            raw = response.read()
        except (ApiException, HTTPError, OSError) as error:
            host = self.api_client.configuration.host
            raise KubernetesApiError(
                f"The Kubernetes API at {host} did not answer: {error}"
            ) from None
        if response.status == 404 and missing_ok:
            return None
        if not 200 <= response.status <= 299:
            raise KubernetesApiError(
                f"Kubernetes refused {method} {path} ({response.status}): {_message(raw)}",
                response.status,
            )
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise KubernetesApiError(
                f"Kubernetes answered {method} {path} with non-JSON."
            ) from None

    # --- verbs ---

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply of a whole object (creates it when missing); the stored object."""
        name = manifest["metadata"]["name"]
        answer = self.request(
            "PATCH",
            self.path(manifest["kind"], name),
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=dict(manifest),
            content_type=APPLY_CONTENT_TYPE,
        )
        return answer or {}

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """One object, or None when it does not exist."""
        return self.request("GET", self.path(kind, name), missing_ok=True)

    def list(self, kind: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """The objects of a kind carrying all of these labels (a 404 kind lists as empty)."""
        answer = self.request(
            "GET",
            self.path(kind),
            query=[("labelSelector", label_selector(labels))],
            missing_ok=True,
        )
        return list((answer or {}).get("items") or [])

    def delete(self, kind: str, name: str) -> None:
        """Delete one object (its pods in the background); a missing object is fine."""
        self.request(
            "DELETE",
            self.path(kind, name),
            query=[("propagationPolicy", "Background")],
            missing_ok=True,
        )

    def delete_collection(self, kind: str, labels: Mapping[str, str]) -> None:
        """Delete every object of a kind carrying all of these labels, in one request."""
        self.request(
            "DELETE",
            self.path(kind),
            query=[("labelSelector", label_selector(labels)), ("propagationPolicy", "Background")],
            missing_ok=True,
        )


def _message(raw: bytes) -> str:
    try:
        return str(json.loads(raw).get("message", ""))[:500] or raw[:500].decode(errors="replace")
    except (ValueError, AttributeError):
        return raw[:500].decode(errors="replace")
