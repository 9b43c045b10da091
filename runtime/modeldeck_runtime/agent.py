"""modeldeck-agent: keep one edge device serving the version its fleet wants, offline or not.

The agent pulls the device's desired state from Modeldeck (conditional GET with ETag, backoff
when the link is down), accepts only manifests signed with this device's key and newer than
the last one applied (no replay), downloads the model resumably (HTTP Range) and checks its
sha256, stages it in the slot not being served, swaps the `current` symlink atomically,
restarts the version server (a child process on its own 127.0.0.1 port) and health-checks it
with a smoke inference built from the model signature. When the new version fails, the agent
swaps back to the previous slot by itself, without the network, and reports the failure.

It reports state and metric summaries (counts and histograms computed from the version
server's /metrics, never inputs) in heartbeats; while offline the summaries wait in an on-disk
outbox and go out, oldest first, when the link returns.

Folder layout (everything stays inside the folder; paths are resolved and checked):

    identity.json   device name, token and manifest key (mode 0600)
    state.json      what is applied, served, staged, failed
    slots/a, slots/b  the two model slots (model.onnx + manifest.json)
    current         symlink to the slot being served
    downloads/      partial downloads, resumed by Range
    outbox/         buffered heartbeat summaries, one JSON file each
    server.log      the version server's output

Only the standard library talks HTTP (urllib); the runtime's own dependencies do the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import http.client
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modeldeck_runtime import __version__

logger = logging.getLogger("modeldeck.agent")

SLOTS = ("a", "b")
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_RESPONSE_BYTES = 1024 * 1024
MAX_OUTBOX_FILES = 10_000
SUMMARIES_PER_HEARTBEAT = 100
MAX_BUCKETS = 256
MAX_FEATURES = 256
DOWNLOAD_CHUNK = 256 * 1024
# A download whose sha256 does not match is retried this many times before the version is
# reported as failed (a flaky link may corrupt one transfer; a tampered artifact stays wrong).
DOWNLOAD_ATTEMPTS = 3
ARTIFACT_PREFIX = "/api/v1/edge/artifacts/"
MAX_MODEL_BYTES = 8 * 1024**3


class AgentError(Exception):
    """A step failed in a way the agent reports and recovers from."""


class LinkDown(AgentError):
    """Modeldeck could not be reached (network, 5xx)."""


# --- small helpers ----------------------------------------------------------------------------


def _request(url: str, **options: Any) -> urllib.request.Request:
    """A urllib request for an http(s) URL only (never file: or other schemes)."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise AgentError(f"only http(s) URLs are allowed, not {url[:60]!r}")
    return urllib.request.Request(url, **options)  # noqa: S310 (scheme checked above)


def _urlopen(request: urllib.request.Request, timeout: float):
    """urlopen for requests made by `_request`."""
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (see _request)


def now_iso() -> str:
    """The current time as ISO-8601 with a zone."""
    return datetime.now(UTC).isoformat()


def canonical(manifest: dict[str, Any]) -> bytes:
    """The bytes a manifest signature covers (as edge.signing makes them)."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def verify_manifest(document: Any, key: bytes, device: str) -> dict[str, Any]:
    """The manifest of a `{manifest, signature}` document when it is signed with `key` and
    addressed to `device`; AgentError otherwise."""
    if not isinstance(document, dict):
        raise AgentError("the desired state is not a JSON object")
    manifest, signature = document.get("manifest"), document.get("signature")
    if not isinstance(manifest, dict) or not isinstance(signature, str):
        raise AgentError("the desired state has no signed manifest")
    expected = hmac.new(key, canonical(manifest), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise AgentError("the manifest signature is not valid for this device")
    if manifest.get("device") != device:
        raise AgentError(f"the manifest is for device {manifest.get('device')!r}, not this one")
    sequence = manifest.get("sequence")
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0:
        raise AgentError("the manifest has no valid sequence number")
    return manifest


def contained(root: Path, *parts: str) -> Path:
    """root/parts, resolved, refusing anything that would leave root."""
    path = root.joinpath(*parts).resolve()
    if path != root and root not in path.parents:
        raise AgentError(f"{'/'.join(parts)!r} leaves the agent folder")
    return path


def write_json(path: Path, data: Any, *, mode: int = 0o644) -> None:
    """Write JSON atomically (temporary file, fsync, rename)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as handle:
        json.dump(data, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def read_json(path: Path, default: Any) -> Any:
    """JSON from a file, or the default when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


# --- metric summaries -------------------------------------------------------------------------


def _series_key(name: str, labels: dict[str, str]) -> str:
    return name + json.dumps(labels, sort_keys=True)


def _per_bucket(pairs: list[tuple[float, float]]) -> dict:
    """Prometheus (le, cumulative) pairs → {bounds, counts} with per-bucket counts."""
    ordered = sorted(pairs)[: MAX_BUCKETS + 1]
    bounds = [bound for bound, _ in ordered if math.isfinite(bound)][:MAX_BUCKETS]
    cumulative = [count for _, count in ordered]
    if not ordered or math.isfinite(ordered[-1][0]):
        cumulative.append(cumulative[-1] if cumulative else 0.0)
    counts, before = [], 0.0
    for value in cumulative[: len(bounds) + 1]:
        counts.append(max(0, round(value - before)))
        before = value
    return {"bounds": bounds, "counts": counts}


def summarize(text: str, previous: dict[str, float]) -> tuple[dict[str, float], dict[str, Any]]:
    """Growth of the version server's counters and histograms since `previous`, as one
    summary (requests by outcome, latency, inference time, features, predictions)."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    growth: list[tuple[str, dict[str, str], float]] = []
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("modeldeck_") or family.type not in ("counter", "histogram"):
            continue
        for sample in family.samples:
            if sample.name[len(family.name) :] not in ("_total", "_bucket", "_count", "_sum"):
                continue
            labels = {k: v for k, v in sample.labels.items() if k not in ("endpoint", "component")}
            key = _series_key(sample.name, labels)
            value = float(sample.value)
            if not math.isfinite(value):
                continue
            values[key] = value
            before = previous.get(key)
            delta = value if before is None or value < before else value - before
            growth.append((sample.name, labels, delta))
    summary: dict[str, Any] = {
        "requests": 0, "successes": 0, "client_errors": 0, "server_errors": 0, "rows": 0,
        "latency_sum": 0.0, "inference_sum": 0.0, "features": {},
    }  # fmt: skip
    outcome_fields = {
        "success": "successes",
        "client_error": "client_errors",
        "server_error": "server_errors",
    }
    histogram_fields = {
        "modeldeck_request_duration_seconds": "latency",
        "modeldeck_inference_duration_seconds": "inference",
        "modeldeck_prediction_value": "prediction",
    }
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for name, labels, delta in growth:
        if name == "modeldeck_requests_total":
            summary["requests"] += round(delta)
            field = outcome_fields.get(labels.get("outcome", ""))
            if field:
                summary[field] += round(delta)
        elif name == "modeldeck_batch_rows_sum":
            summary["rows"] += round(delta)
        elif name == "modeldeck_request_duration_seconds_sum":
            summary["latency_sum"] += delta
        elif name == "modeldeck_inference_duration_seconds_sum":
            summary["inference_sum"] += delta
        elif name == "modeldeck_feature_category_total":
            feature = summary["features"].setdefault(labels.get("feature", "")[:100], {})
            categories = feature.setdefault("categories", {})
            category = labels.get("category", "")[:100]
            categories[category] = categories.get(category, 0) + round(delta)
        elif name == "modeldeck_predictions_total":
            categories = summary.setdefault("prediction", {}).setdefault("categories", {})
            label = labels.get("class", "")[:100]
            categories[label] = categories.get(label, 0) + round(delta)
        elif name.endswith("_bucket"):
            family = name[: -len("_bucket")]
            bound = float(labels.get("le", "+Inf"))
            if family == "modeldeck_feature_value":
                buckets.setdefault(("features", labels.get("feature", "")[:100]), []).append(
                    (bound, delta)
                )
            elif family in histogram_fields:
                buckets.setdefault((histogram_fields[family], ""), []).append((bound, delta))
    for (field, feature), pairs in buckets.items():
        if field == "features":
            if len(summary["features"]) < MAX_FEATURES:
                summary["features"][feature] = _per_bucket(pairs)
        else:
            summary[field] = _per_bucket(pairs)
    return values, summary


def summary_is_empty(summary: dict[str, Any]) -> bool:
    """Nothing was served since the last summary."""
    return not summary["requests"] and not summary["rows"]


# --- the agent --------------------------------------------------------------------------------


class Agent:
    """One device's agent over one folder; `run()` loops until SIGTERM."""

    def __init__(
        self,
        root: Path,
        *,
        port: int,
        poll_seconds: float = 30.0,
        heartbeat_seconds: float = 30.0,
        max_backoff_seconds: float = 300.0,
        health_timeout_seconds: float = 60.0,
        request_timeout_seconds: float = 10.0,
    ) -> None:
        self.root = root.resolve()
        self.port = port
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.health_timeout_seconds = health_timeout_seconds
        self.request_timeout_seconds = request_timeout_seconds
        identity = read_json(self.root / "identity.json", None)
        if not isinstance(identity, dict) or not {"server", "token", "key", "device"} <= set(
            identity
        ):
            raise AgentError(f"{self.root / 'identity.json'} is missing; enroll first")
        self.server = str(identity["server"]).rstrip("/")
        self.token = str(identity["token"])
        self.key = bytes.fromhex(identity["key"])
        self.device = str(identity["device"])
        for folder in ("slots/a", "slots/b", "downloads", "outbox"):
            contained(self.root, *folder.split("/")).mkdir(parents=True, exist_ok=True)
        self.state: dict[str, Any] = {
            "applied_sequence": 0,
            "failed_sequence": 0,
            "failed_version": "",
            "current": None,
            "previous": None,
            "staged": None,
            "health": "unknown",
            "reason": "",
            "etag": "",
            "summary_sequence": 0,
            "download_failures": {},
        }
        self.state.update(read_json(self.root / "state.json", {}))
        self.child: subprocess.Popen | None = None
        self.metrics_previous: dict[str, float] = {}
        self.failures = 0
        self.next_poll = 0.0
        self.next_heartbeat = 0.0
        self.stopping = False

    # -- persistence --

    def save(self) -> None:
        """Persist the state (atomic rename), so a restart or power cut resumes from it."""
        write_json(self.root / "state.json", self.state)

    # -- HTTP --

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        limit: int = MAX_RESPONSE_BYTES,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request to Modeldeck with the device token; LinkDown when unreachable or 5xx."""
        data = json.dumps(body).encode() if body is not None else None
        request = _request(self.server + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("User-Agent", f"modeldeck-agent/{__version__}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with _urlopen(request, timeout=self.request_timeout_seconds) as response:
                return response.status, dict(response.headers), response.read(limit + 1)[:limit]
        except urllib.error.HTTPError as error:
            if error.code >= 500:
                raise LinkDown(f"{path} answered {error.code}") from None
            return error.code, dict(error.headers), error.read(limit)
        except (OSError, urllib.error.URLError) as error:
            raise LinkDown(f"{path}: {error}") from None

    def backoff(self) -> float:
        """Seconds to wait after `self.failures` failed contacts (exponential, jittered)."""
        base = min(self.poll_seconds, self.heartbeat_seconds)
        delay = min(self.max_backoff_seconds, base * (2 ** min(self.failures, 16)))
        return delay * random.uniform(0.5, 1.0)

    # -- desired state --

    def poll(self) -> None:
        """Fetch the desired state (conditionally) and apply a newer manifest."""
        headers = {"If-None-Match": self.state["etag"]} if self.state.get("etag") else {}
        status, response_headers, body = self.request(
            "GET", "/api/v1/edge/desired/", headers=headers, limit=MAX_MANIFEST_BYTES
        )
        if status == 304:
            return
        if status != 200:
            raise AgentError(f"the desired state answered {status}: {body[:200]!r}")
        try:
            document = json.loads(body)
        except ValueError:
            raise AgentError("the desired state is not JSON") from None
        manifest = verify_manifest(document, self.key, self.device)
        self.consider(manifest)
        etag = response_headers.get("ETag") or response_headers.get("Etag") or ""
        self.state["etag"] = etag[:200]
        self.save()

    def consider(self, manifest: dict[str, Any]) -> None:
        """Apply a verified manifest if it is newer than what was applied (or failed)."""
        sequence = manifest["sequence"]
        applied = self.state["applied_sequence"]
        if sequence < applied:
            self.state["reason"] = (
                f"refused manifest {sequence}: older than the applied manifest {applied} (replay)"
            )
            logger.warning(self.state["reason"])
            return
        if sequence == applied or sequence <= self.state["failed_sequence"]:
            return
        version = manifest.get("version")
        current = self.state.get("current") or {}
        if version is None or version == current.get("version"):
            # Nothing to download: the device already serves it (or should serve nothing new).
            self.state["applied_sequence"] = sequence
            if current:
                current["sequence"] = sequence
            self.save()
            return
        self.apply(manifest)

    def download(self, manifest: dict[str, Any]) -> Path:
        """The verified model file of a manifest, resuming a partial download."""
        sha256 = str(manifest.get("sha256", ""))
        path = str(manifest.get("artifact", ""))
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise AgentError("the manifest has no valid sha256")
        if not path.startswith(ARTIFACT_PREFIX) or ".." in path or "?" in path:
            raise AgentError("the manifest's artifact path is not an artifact download")
        partial = contained(self.root, "downloads", f"{sha256}.part")
        size = manifest.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_MODEL_BYTES:
            raise AgentError("the manifest has no valid size")
        have = partial.stat().st_size if partial.exists() else 0
        if have > size:
            partial.unlink()
            have = 0
        if have < size:
            headers = {"Range": f"bytes={have}-"} if have else {}
            request = _request(self.server + path, method="GET")
            request.add_header("Authorization", f"Bearer {self.token}")
            for name, value in headers.items():
                request.add_header(name, value)
            try:
                response = _urlopen(request, timeout=self.request_timeout_seconds)
            except urllib.error.HTTPError as error:
                if error.code >= 500:
                    raise LinkDown(f"artifact download answered {error.code}") from None
                raise AgentError(f"artifact download answered {error.code}") from None
            except (OSError, urllib.error.URLError) as error:
                raise LinkDown(f"artifact download: {error}") from None
            with response:
                mode = "ab" if response.status == 206 else "wb"
                with open(partial, mode) as out:
                    try:
                        for block in iter(lambda: response.read(DOWNLOAD_CHUNK), b""):
                            out.write(block)
                            if out.tell() > size:
                                break
                    except (OSError, http.client.HTTPException) as error:
                        # What arrived stays in the .part file; the next attempt resumes it.
                        raise LinkDown(f"artifact download broke off: {error}") from None
            if partial.stat().st_size < size:
                raise LinkDown("artifact download broke off; it resumes on the next try")
        if sha256_of(partial) != sha256:
            partial.unlink()
            failures = self.state["download_failures"]
            key = str(manifest["sequence"])
            failures[key] = failures.get(key, 0) + 1
            raise AgentError(
                f"refused {manifest.get('version')}: the downloaded file's sha256 does not match "
                "the manifest (corrupted or tampered)"
            )
        return partial

    def apply(self, manifest: dict[str, Any]) -> None:
        """Download, stage in the free slot, swap, health-check; roll back when unhealthy."""
        sequence, version = manifest["sequence"], str(manifest["version"])
        try:
            file = self.download(manifest)
        except LinkDown:
            raise
        except AgentError as error:
            self.state["reason"] = str(error)
            if self.state["download_failures"].get(str(sequence), 0) >= DOWNLOAD_ATTEMPTS:
                self.fail(sequence, version, str(error))
            self.save()
            return
        current = self.state.get("current") or {}
        slot = "b" if current.get("slot") == "a" else "a"
        folder = contained(self.root, "slots", slot)
        for leftover in folder.iterdir():
            leftover.unlink()
        os.replace(file, folder / "model.onnx")
        if isinstance(manifest.get("profile"), dict):
            write_json(folder / "reference.json", manifest["profile"])
        write_json(folder / "manifest.json", manifest)
        entry = {"slot": slot, "version": version, "sequence": sequence, "manifest": manifest}
        self.state["staged"] = entry
        self.save()
        previous = self.state.get("current")
        # Its last metrics still belong to the version it served.
        self.stop_child()
        self.swap(slot)
        self.state.update(current=entry, previous=previous, staged=None)
        self.save()
        healthy, reason = self.start_and_check(manifest)
        if healthy:
            self.state.update(applied_sequence=sequence, health="ok", reason="")
            self.state["download_failures"] = {}
            self.save()
            logger.info("now serving %s (manifest %s)", version, sequence)
            return
        logger.warning("%s failed its health check (%s); rolling back", version, reason)
        self.rollback(f"{version} failed its health check: {reason}")
        self.fail(sequence, version, reason)

    def fail(self, sequence: int, version: str, reason: str) -> None:
        """Record a manifest that will not be applied (reported to Modeldeck)."""
        self.state.update(failed_sequence=sequence, failed_version=version)
        self.state["reason"] = reason[:1000]
        self.save()

    def swap(self, slot: str) -> None:
        """Point `current` at a slot in one rename."""
        link = self.root / "current"
        temporary = self.root / f".current.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        os.symlink(Path("slots") / slot, temporary)
        os.replace(temporary, link)

    def rollback(self, reason: str) -> None:
        """Serve the previous slot again (no network needed)."""
        previous = self.state.get("previous")
        failed = self.state.get("current")
        self.stop_child()
        if previous is None:
            self.stop_child()
            self.state.update(current=None, previous=None, health="failed", reason=reason[:1000])
            with contextlib.suppress(FileNotFoundError):
                (self.root / "current").unlink()
            self.save()
            return
        self.swap(previous["slot"])
        self.state.update(current=previous, previous=failed)
        healthy, detail = self.start_and_check(previous["manifest"])
        health = "degraded" if healthy else "failed"
        self.state.update(health=health, reason=f"rolled back: {reason}"[:1000])
        if not healthy:
            self.state["reason"] = f"rolled back, but the previous version fails too: {detail}"
        self.save()

    # -- the version server --

    def start_child(self) -> None:
        """Start the version server on the current slot."""
        self.stop_child()
        current = self.state["current"]
        manifest = current["manifest"]
        log = open(contained(self.root, "server.log"), "ab")  # noqa: SIM115 (the child owns it)
        argv = [
            sys.executable, "-m", "modeldeck_runtime", "serve",
            "--model-dir", str(self.root / "current"),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--model-name", str(manifest.get("model") or "model"),
            # The full reference ("model:2"), as on every other target, so metrics labels agree;
            # callers may still name the version by its number.
            "--model-version", str(manifest.get("version") or manifest.get("number") or 1),
            "--endpoint", str(manifest.get("fleet") or ""),
            "--variant", "edge", "--drain-seconds", "2",
        ]  # fmt: skip
        self.child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        log.close()
        self.metrics_previous = {}

    def stop_child(self) -> None:
        """Stop the version server (SIGTERM, then SIGKILL); collect its last metrics first."""
        child = self.child
        if child is None:
            return
        if child.poll() is None:
            with contextlib.suppress(AgentError, OSError, ValueError):
                self.collect_summary()
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.child = None

    def local(self, method: str, path: str, body: Any = None, timeout: float = 5.0):
        """A request to the version server; (status, parsed JSON or text)."""
        data = json.dumps(body).encode() if body is not None else None
        request = _request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with _urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def start_and_check(self, manifest: dict[str, Any]) -> tuple[bool, str]:
        """Start the server on the current slot; healthy when it gets ready and answers a
        smoke inference built from the signature with finite numbers."""
        self.start_child()
        deadline = time.monotonic() + self.health_timeout_seconds
        while True:
            if self.child is None or self.child.poll() is not None:
                return False, "the version server exited while loading the model"
            with contextlib.suppress(OSError):
                if self.local("GET", "/v2/health/ready", timeout=1.0)[0] == 200:
                    break
            if time.monotonic() > deadline:
                return False, f"not ready within {self.health_timeout_seconds:g} seconds"
            time.sleep(0.1)
        try:
            status, body = self.local(
                "POST",
                f"/v2/models/{manifest.get('model') or 'model'}/infer",
                smoke_request(manifest.get("signature") or {}),
                timeout=30.0,
            )
        except OSError as error:
            return False, f"smoke inference failed: {error}"
        if status != 200:
            return False, f"smoke inference answered {status}: {body[:200]!r}"
        problem = check_outputs(body)
        if problem:
            return False, f"smoke inference {problem}"
        # The smoke request is not traffic: count from here on.
        with contextlib.suppress(OSError, ValueError):
            status, text = self.local("GET", "/metrics", timeout=5.0)
            if status == 200:
                self.metrics_previous = summarize(text.decode("utf-8", "replace"), {})[0]
        return True, ""

    def ensure_child(self) -> None:
        """Keep the current version served: restart the server if it died."""
        if self.state.get("current") is None:
            return
        if self.child is None or self.child.poll() is not None:
            if self.child is not None:
                logger.warning("the version server exited (%s); restarting", self.child.returncode)
            healthy, reason = self.start_and_check(self.state["current"]["manifest"])
            if not healthy and self.state.get("previous"):
                self.rollback(f"{self.state['current']['version']} stopped serving: {reason}")

    # -- heartbeats and summaries --

    def collect_summary(self) -> None:
        """Append the growth of the server's metrics since the last collection to the outbox."""
        current = self.state.get("current")
        if current is None or self.child is None or self.child.poll() is not None:
            return
        status, body = self.local("GET", "/metrics", timeout=5.0)
        if status != 200:
            return
        values, summary = summarize(body.decode("utf-8", "replace"), self.metrics_previous)
        self.metrics_previous = values
        if summary_is_empty(summary):
            return
        self.state["summary_sequence"] += 1
        entry = {
            "sequence": self.state["summary_sequence"],
            "at": now_iso(),
            "version": current["version"],
            **summary,
        }
        outbox = contained(self.root, "outbox")
        write_json(outbox / f"{entry['sequence']:012d}.json", entry)
        self.save()
        files = sorted(outbox.glob("*.json"))
        for stale in files[: max(0, len(files) - MAX_OUTBOX_FILES)]:
            stale.unlink()  # bounded disk use: the oldest summaries go first

    def report(self) -> dict[str, Any]:
        """The state part of a heartbeat."""
        state = self.state

        def version(entry):
            return (entry or {}).get("version", "")

        return {
            "current_version": version(state.get("current")),
            "previous_version": version(state.get("previous")),
            "staged_version": version(state.get("staged")),
            "applied_sequence": state["applied_sequence"],
            "failed_sequence": state["failed_sequence"],
            "failed_version": state["failed_version"],
            "health": state["health"],
            "reason": state["reason"][:1000],
        }

    def heartbeat(self) -> None:
        """Send the state and the buffered summaries, oldest first, until the outbox is empty."""
        outbox = contained(self.root, "outbox")
        while True:
            files = sorted(outbox.glob("*.json"))[:SUMMARIES_PER_HEARTBEAT]
            summaries = [read_json(path, None) for path in files]
            body = {
                "agent_version": __version__,
                "state": self.report(),
                "summaries": [entry for entry in summaries if isinstance(entry, dict)],
            }
            status, _, answer = self.request("POST", "/api/v1/edge/heartbeat/", body=body)
            if status == 400:
                # A batch Modeldeck refuses will never be accepted; keep the outbox moving.
                for path in files:
                    path.unlink()
            if status != 200:
                raise AgentError(f"the heartbeat answered {status}: {answer[:300]!r}")
            for path in files:
                path.unlink()
            if len(files) < SUMMARIES_PER_HEARTBEAT:
                return

    # -- the loop --

    def step(self) -> None:
        """One turn of the loop: keep serving, poll and heartbeat when due."""
        self.ensure_child()
        now = time.monotonic()
        if now >= self.next_heartbeat:
            with contextlib.suppress(OSError, ValueError):
                self.collect_summary()
        if now < min(self.next_poll, self.next_heartbeat):
            return
        try:
            if now >= self.next_poll:
                self.poll()
                self.next_poll = now + self.poll_seconds
            if now >= self.next_heartbeat:
                self.heartbeat()
                self.next_heartbeat = now + self.heartbeat_seconds
            self.failures = 0
        except LinkDown as error:
            self.failures += 1
            delay = self.backoff()
            logger.info("Modeldeck unreachable (%s); next try in %.1f s", error, delay)
            self.next_poll = self.next_heartbeat = now + delay
        except AgentError as error:
            logger.warning("%s", error)
            self.state["reason"] = str(error)[:1000]
            self.save()
            self.next_poll = now + self.poll_seconds
            self.next_heartbeat = now + self.heartbeat_seconds

    def run(self) -> int:
        """Loop until SIGTERM/SIGINT; the version server stops with the agent."""

        def stop(*_):
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if self.state.get("current") is not None and (self.root / "current").exists():
            self.start_and_check(self.state["current"]["manifest"])
        while not self.stopping:
            self.step()
            time.sleep(0.05)
        self.stop_child()
        return 0


def smoke_request(signature: dict[str, Any]) -> dict[str, Any]:
    """A v2 infer request with one row of zeros (empty strings for BYTES) per input."""
    inputs = []
    for spec in signature.get("inputs") or []:
        shape = [1 if not isinstance(d, int) or d < 1 else d for d in spec.get("shape") or [1]]
        count = math.prod(shape)
        if count > 1_000_000:
            raise AgentError(f"input {spec.get('name')!r} is too large for a smoke inference")
        datatype = str(spec.get("datatype", "FP32"))
        data: list[Any] = [""] * count if datatype == "BYTES" else [0] * count
        name = spec.get("name")
        inputs.append({"name": name, "shape": shape, "datatype": datatype, "data": data})
    return {"inputs": inputs}


def check_outputs(body: bytes) -> str:
    """'' when every numeric output of a v2 response is a finite number, else the problem."""
    try:
        outputs = json.loads(body).get("outputs") or []
    except (ValueError, AttributeError):
        return "answered something that is not a v2 response"
    if not outputs:
        return "answered no outputs"
    for output in outputs:
        if output.get("datatype") == "BYTES":
            continue
        for value in output.get("data") or []:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return f"answered a non-number in {output.get('name')!r} (NaN or infinity)"
            if not math.isfinite(value):
                return f"answered a non-finite number (NaN or infinity) in {output.get('name')!r}"
    return ""


# --- command line -----------------------------------------------------------------------------


def enroll(server: str, code: str, name: str, root: Path, timeout: float = 10.0) -> dict:
    """Exchange a one-time code for this device's token and key; writes identity.json."""
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    parsed = urllib.parse.urlsplit(server)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise AgentError("the server must be an http(s) URL")
    body = json.dumps({"code": code, "name": name}).encode()
    request = _request(server.rstrip("/") + "/api/v1/edge/enroll/", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with _urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read(MAX_RESPONSE_BYTES))
    except urllib.error.HTTPError as error:
        raise AgentError(f"enrollment refused ({error.code}): {error.read(500)!r}") from None
    identity = {
        "server": server.rstrip("/"),
        "device": answer["device"],
        "fleet": answer["fleet"],
        "token": answer["token"],
        "key": answer["key"],
    }
    write_json(root / "identity.json", identity, mode=0o600)
    return identity


def parser() -> argparse.ArgumentParser:
    """Arguments of modeldeck-agent."""
    env = os.environ.get
    main = argparse.ArgumentParser(prog="modeldeck-agent", description=__doc__.splitlines()[0])
    commands = main.add_subparsers(dest="command", required=True)
    enroll_command = commands.add_parser("enroll", help="join a fleet with a one-time code")
    run_command = commands.add_parser("run", help="serve and follow the fleet")
    for command in (enroll_command, run_command):
        command.add_argument("--dir", default=env("MODELDECK_AGENT_DIR", "."))
        command.add_argument("--server", default=env("MODELDECK_SERVER"))
        command.add_argument("--code", default=env("MODELDECK_ENROLLMENT_CODE"))
        command.add_argument("--name", default=env("MODELDECK_DEVICE_NAME"))
    run_command.add_argument("--port", type=int, default=int(env("MODELDECK_AGENT_PORT", 8080)))
    run_command.add_argument(
        "--poll-seconds", type=float, default=float(env("MODELDECK_AGENT_POLL_SECONDS", 30))
    )
    run_command.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=float(env("MODELDECK_AGENT_HEARTBEAT_SECONDS", 30)),
    )
    run_command.add_argument(
        "--max-backoff-seconds",
        type=float,
        default=float(env("MODELDECK_AGENT_MAX_BACKOFF_SECONDS", 300)),
    )
    run_command.add_argument(
        "--health-timeout-seconds",
        type=float,
        default=float(env("MODELDECK_AGENT_HEALTH_TIMEOUT_SECONDS", 60)),
    )
    run_command.add_argument("--log-level", default=env("MODELDECK_LOG_LEVEL", "info"))
    return main


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of modeldeck-agent."""
    arguments = parser().parse_args(argv)
    root = Path(arguments.dir).resolve()
    logging.basicConfig(
        level=getattr(arguments, "log_level", "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        if arguments.command == "enroll" or not (root / "identity.json").exists():
            if not (arguments.server and arguments.code and arguments.name):
                print("enrolling needs --server, --code and --name", file=sys.stderr)
                return 2
            enroll(arguments.server, arguments.code, arguments.name, root)
            if arguments.command == "enroll":
                print(f"enrolled {arguments.name} in {root}")
                return 0
        agent = Agent(
            root,
            port=arguments.port,
            poll_seconds=arguments.poll_seconds,
            heartbeat_seconds=arguments.heartbeat_seconds,
            max_backoff_seconds=arguments.max_backoff_seconds,
            health_timeout_seconds=arguments.health_timeout_seconds,
        )
    except (AgentError, OSError) as error:
        print(f"modeldeck-agent: {error}", file=sys.stderr)
        return 1
    return agent.run()


if __name__ == "__main__":
    raise SystemExit(main())
