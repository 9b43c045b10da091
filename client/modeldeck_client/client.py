"""The typed client of Modeldeck's REST API (docs/api.md). The CLI is a thin layer over it."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from modeldeck_client.config import Settings, load_settings
from modeldeck_client.types import (
    Alias,
    BatchJob,
    DeploymentEvent,
    DeployOutcome,
    Endpoint,
    Experiment,
    Model,
    Release,
    Version,
)

Progress = Callable[[int, int], None]
CHUNK = 1 << 20


class ApiError(Exception):
    """The server refused a request: its status, its `error` sentence and `detail` object."""

    def __init__(self, status: int, message: str, detail: Any = None):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.detail = detail


class WaitTimeout(Exception):
    """Something did not settle within the time the caller allowed."""


def _segment(value: str | int) -> str:
    # Names are slugs on the server; quoting keeps a stray '/' or '?' from changing the path.
    return quote(str(value), safe="")


def _results(document: Any) -> list[dict[str, Any]]:
    """A list answer, paginated (`{results: [...]}`) or plain."""
    if isinstance(document, dict):
        return list(document.get("results", []))
    return list(document)


class MultipartStream:
    """A multipart/form-data body streamed from disk with a known length, so a progress bar can
    follow the upload and a large model never sits in memory."""

    def __init__(self, fields: dict[str, str], files: dict[str, Path]):
        self.boundary = "modeldeck-" + secrets.token_hex(16)
        self.parts: list[bytes | Path] = []
        for name, value in fields.items():
            self.parts.append(self._header(name) + value.encode() + b"\r\n")
        for name, path in files.items():
            self.parts.append(self._header(name, path.name))
            self.parts.append(path)
            self.parts.append(b"\r\n")
        self.parts.append(f"--{self.boundary}--\r\n".encode())
        self.length = sum(p.stat().st_size if isinstance(p, Path) else len(p) for p in self.parts)

    def _header(self, name: str, file_name: str | None = None) -> bytes:
        disposition = f'form-data; name="{name}"'
        if file_name is not None:
            safe = file_name.replace('"', "_").replace("\r", "_").replace("\n", "_")
            disposition += f'; filename="{safe}"'
        kind = "Content-Type: application/octet-stream\r\n" if file_name is not None else ""
        return f"--{self.boundary}\r\nContent-Disposition: {disposition}\r\n{kind}\r\n".encode()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def chunks(self, progress: Progress | None = None) -> Iterator[bytes]:
        sent = 0
        for part in self.parts:
            pieces = _file_chunks(part) if isinstance(part, Path) else iter([part])
            for piece in pieces:
                sent += len(piece)
                yield piece
                if progress is not None:
                    progress(sent, self.length)


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


class Client:
    """One server and one token. Methods return typed results or raise ApiError."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=f"{self.url}/api/v1/",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, write=None),
            transport=transport,
            follow_redirects=False,
        )

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: Any) -> Client:
        settings = settings or load_settings()
        return cls(settings.url, settings.token, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise self._error(response)
        return response

    @staticmethod
    def _error(response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            message = body.get("error") or body.get("detail") or response.reason_phrase
            return ApiError(response.status_code, str(message), body.get("detail"))
        return ApiError(response.status_code, response.reason_phrase or "request failed")

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def _all(self, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every item of a paginated list, page by page."""
        items: list[dict[str, Any]] = []
        params = {**(params or {}), "page_size": 500}
        page = 1
        while True:
            document = self._json("GET", path, params={**params, "page": page})
            items.extend(_results(document))
            if not (isinstance(document, dict) and document.get("next")):
                return items
            page += 1

    def _download(self, path: str, destination: Path, params: dict | None = None) -> Path:
        with self._http.stream("GET", path, params=params) as response:
            if response.status_code >= 400:
                response.read()
                raise self._error(response)
            partial = destination.with_name(destination.name + ".part")
            with partial.open("wb") as handle:
                for chunk in response.iter_bytes(CHUNK):
                    handle.write(chunk)
            partial.replace(destination)
        return destination

    # -- registry -------------------------------------------------------------------------------

    def model_create(
        self,
        name: str,
        *,
        description: str = "",
        tags: dict[str, str] | None = None,
        team: str = "",
    ) -> Model:
        body: dict[str, Any] = {"name": name, "description": description, "tags": tags or {}}
        if team:
            body["team"] = team
        return Model.from_json(self._json("POST", "models/", json=body))

    def model_get(self, name: str) -> Model:
        return Model.from_json(self._json("GET", f"models/{_segment(name)}/"))

    def version_push(
        self,
        model: str,
        file: Path,
        *,
        reference: Path | None = None,
        source: str = "",
        metrics: dict[str, float] | None = None,
        params: dict[str, Any] | None = None,
        git_commit: str = "",
        data_reference: str = "",
        progress: Progress | None = None,
    ) -> Version:
        """Upload an ONNX file as the model's next version (status pending)."""
        fields = {
            key: value
            for key, value in {
                "source": source,
                "git_commit": git_commit,
                "data_reference": data_reference,
                "metrics": json.dumps(metrics) if metrics else "",
                "params": json.dumps(params) if params else "",
            }.items()
            if value
        }
        files = {"file": Path(file)}
        if reference is not None:
            files["reference"] = Path(reference)
        body = MultipartStream(fields, files)
        response = self._request(
            "POST",
            f"models/{_segment(model)}/versions/",
            content=body.chunks(progress),
            headers={"Content-Type": body.content_type, "Content-Length": str(body.length)},
        )
        return Version.from_json(response.json())

    def version_get(self, model: str, number: int | str) -> Version:
        path = f"models/{_segment(model)}/versions/{_segment(number)}/"
        return Version.from_json(self._json("GET", path))

    def version_list(self, model: str) -> list[Version]:
        return [Version.from_json(v) for v in self._all(f"models/{_segment(model)}/versions/")]

    def version_wait(
        self, model: str, number: int, *, timeout: float = 600, interval: float = 1.0
    ) -> Version:
        """Poll until validation is finished (ready, invalid or archived)."""
        deadline = time.monotonic() + timeout
        while True:
            version = self.version_get(model, number)
            if version.is_finished:
                return version
            if time.monotonic() > deadline:
                raise WaitTimeout(f"{model}:{number} is still {version.status} after {timeout}s.")
            time.sleep(interval)

    def version_approve(
        self, model: str, number: int, *, decision: str = "approved", comment: str = ""
    ) -> Version:
        path = f"models/{_segment(model)}/versions/{_segment(number)}/approve/"
        self._request("POST", path, json={"decision": decision, "comment": comment})
        return self.version_get(model, number)

    def alias_set(self, model: str, alias: str, version: int, *, reason: str = "") -> Alias:
        path = f"models/{_segment(model)}/aliases/{_segment(alias)}/"
        body: dict[str, Any] = {"version": version}
        if reason:
            body["reason"] = reason
        return Alias.from_json(self._json("PUT", path, json=body))

    def triton_export(self, model: str, number: int | str, destination: Path) -> Path:
        """Download the version as a zipped Triton model repository."""
        path = f"models/{_segment(model)}/versions/{_segment(number)}/triton/"
        return self._download(path, Path(destination))

    # -- deployments ----------------------------------------------------------------------------

    def endpoint_create(self, name: str, *, target: str, version: str, note: str = "") -> Endpoint:
        body = {"name": name, "target": target, "version": version, "note": note}
        return Endpoint.from_json(self._json("POST", "endpoints/", json=body))

    def endpoint_get(self, name: str) -> Endpoint:
        return Endpoint.from_json(self._json("GET", f"endpoints/{_segment(name)}/"))

    def _release_action(self, name: str, operation: str, body: dict[str, Any]) -> int:
        path = f"endpoints/{_segment(name)}/{operation}/"
        return int(self._json("POST", path, json=body)["release"])

    def deploy(
        self, endpoint: str, version: str, *, weight: int | None = None, note: str = ""
    ) -> int:
        """Add or replace a candidate (weight < 100) or replace what serves; the release number."""
        body: dict[str, Any] = {"version": version, "note": note}
        if weight is not None:
            body["weight"] = weight
        return self._release_action(endpoint, "deploy", body)

    def traffic_set(self, endpoint: str, variants: list[dict[str, Any]], *, note: str = "") -> int:
        return self._release_action(endpoint, "traffic", {"variants": variants, "note": note})

    def promote(self, endpoint: str, *, note: str = "") -> int:
        return self._release_action(endpoint, "promote", {"note": note})

    def rollback(self, endpoint: str, *, to: int | None = None, note: str = "") -> int:
        body: dict[str, Any] = {"note": note}
        if to is not None:
            body["release"] = to
        return self._release_action(endpoint, "rollback", body)

    def releases(self, endpoint: str) -> list[Release]:
        path = f"endpoints/{_segment(endpoint)}/releases/"
        return [Release.from_json(release) for release in self._all(path)]

    def events(self, endpoint: str, *, since: int = 0) -> list[DeploymentEvent]:
        path = f"endpoints/{_segment(endpoint)}/events/"
        document = self._json("GET", path, params={"since": since})
        return [DeploymentEvent.from_json(e) for e in _results(document)]

    def release_wait(
        self,
        endpoint: str,
        release: int,
        *,
        timeout: float = 600,
        interval: float = 1.0,
        since_event: int = 0,
    ) -> DeployOutcome:
        """Poll until the endpoint serves `release` (live) or gives up on it: failed, stopped, or
        another release took its place (a guardrail's rollback, another deploy)."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.endpoint_get(endpoint)
            reason = ""
            if current.release != release:
                reason = f"release {current.release} replaced release {release}"
            elif current.status == "live" and current.live_release == release:
                return DeployOutcome(current, release, True, "live", [])
            elif current.status in {"failed", "stopped"}:
                reason = current.status_reason or current.status
            elif current.status == "degraded" and current.live_release != release:
                # The reconciler failed this release while an earlier one still serves.
                reason = current.status_reason or "degraded"
            elif time.monotonic() > deadline:
                reason = f"still {current.status} after {timeout:g}s"
            if reason:
                events = self.events(endpoint, since=since_event)
                return DeployOutcome(current, release, False, reason, events)
            time.sleep(interval)

    def last_event_id(self, endpoint: str) -> int:
        events = self.events(endpoint)
        return events[-1].id if events else 0

    # -- batch, feedback, experiments -----------------------------------------------------------

    def batch_create(
        self, version: str, file: Path, *, key_column: str = "", progress: Progress | None = None
    ) -> BatchJob:
        fields = {"version": version}
        if key_column:
            fields["key_column"] = key_column
        body = MultipartStream(fields, {"file": Path(file)})
        response = self._request(
            "POST",
            "batch-jobs/",
            content=body.chunks(progress),
            headers={"Content-Type": body.content_type, "Content-Length": str(body.length)},
        )
        return BatchJob.from_json(response.json())

    def batch_get(self, job_id: int) -> BatchJob:
        return BatchJob.from_json(self._json("GET", f"batch-jobs/{int(job_id)}/"))

    def batch_wait(self, job_id: int, *, timeout: float = 3600, interval: float = 1.0) -> BatchJob:
        deadline = time.monotonic() + timeout
        while True:
            job = self.batch_get(job_id)
            if job.is_finished:
                return job
            if time.monotonic() > deadline:
                raise WaitTimeout(f"Batch job {job_id} is still {job.status} after {timeout}s.")
            time.sleep(interval)

    def batch_result(self, job_id: int, destination: Path) -> Path:
        return self._download(f"batch-jobs/{int(job_id)}/result/", Path(destination))

    def feedback_send(self, endpoint: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Labels or values for logged predictions: `[{request_id, label}]` or `{..., value}`."""
        return self._json("POST", f"endpoints/{_segment(endpoint)}/feedback/", json=items)

    def experiment_create(self, **fields: Any) -> Experiment:
        return Experiment.from_json(self._json("POST", "experiments/", json=fields))

    def experiment_get(self, experiment_id: int) -> Experiment:
        return Experiment.from_json(self._json("GET", f"experiments/{int(experiment_id)}/"))

    def experiment_start(self, experiment_id: int) -> Experiment:
        path = f"experiments/{int(experiment_id)}/start/"
        return Experiment.from_json(self._json("POST", path))
