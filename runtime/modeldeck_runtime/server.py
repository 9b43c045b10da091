"""The version server: one model version over Open Inference Protocol v2, as a raw ASGI app."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import onnxruntime
import orjson

from modeldeck_runtime import __version__
from modeldeck_runtime.asgi import (
    JSON_TYPE,
    ClientDisconnected,
    Headers,
    Receive,
    Scope,
    Send,
    error_body,
    header,
    read_body,
    request_id,
    respond,
    run_lifespan,
)
from modeldeck_runtime.codec import (
    JSON_OPTIONS,
    RequestError,
    encode_infer_response,
    invocation_value,
    load_json,
    parse_infer_request,
)
from modeldeck_runtime.metrics import CONTENT_TYPE, ServingMetrics
from modeldeck_runtime.profile import configure_tracking, load_profile
from modeldeck_runtime.signature import (
    Signature,
    bind_invocation,
    bind_request,
    read_signature,
    smoke_inputs,
)

logger = logging.getLogger("modeldeck.server")

# Small batches run on the event loop: a hop to a worker thread costs more than they do.
INLINE_ELEMENTS = 16384


@dataclass(frozen=True)
class ServerSettings:
    """Everything the version server is told at start."""

    model_dir: Path
    model_name: str = "model"
    model_version: str = "1"
    endpoint: str = ""
    variant: str = "primary"
    max_rows: int = 10000
    max_body_bytes: int = 32 * 1024 * 1024
    threads: int = 0


@dataclass(frozen=True)
class LoadedModel:
    """An onnxruntime session that passed its smoke inference."""

    session: onnxruntime.InferenceSession
    signature: Signature
    output_names: list[str]
    metadata: bytes


class VersionServer:
    """ASGI app serving one model version: v2 inference, /invocations, health and metrics."""

    def __init__(
        self,
        settings: ServerSettings,
        on_load_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_load_failure = on_load_failure
        self.model: LoadedModel | None = None
        self.load_error: BaseException | None = None
        self._loading: asyncio.Future[None] | None = None
        self.metrics = ServingMetrics(endpoint=settings.endpoint, component="server")
        self.series = self.metrics.variant(settings.model_version, settings.variant)
        self.version_header = (b"x-model-version", settings.model_version.encode())
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="inference")
        model_path = f"/v2/models/{settings.model_name}"
        version_path = f"{model_path}/versions/{settings.model_version}"
        self.routes: dict[str, tuple[str, str]] = {
            "/v2/health/live": ("GET", "live"),
            "/v2/health/ready": ("GET", "ready"),
            "/v2": ("GET", "server_metadata"),
            "/metrics": ("GET", "metrics"),
            "/invocations": ("POST", "invocations"),
        }
        for prefix in (model_path, version_path):
            self.routes[prefix] = ("GET", "model_metadata")
            self.routes[f"{prefix}/ready"] = ("GET", "model_ready")
            self.routes[f"{prefix}/infer"] = ("POST", "infer")
        self.server_metadata = orjson.dumps(
            {
                "name": "modeldeck-runtime",
                "version": __version__,
                "extensions": ["binary_tensor_data"],
            }
        )

    def load(self) -> None:
        """Create the session, read the signature and profile, and run a smoke inference."""
        settings = self.settings
        options = onnxruntime.SessionOptions()
        if settings.threads:
            options.intra_op_num_threads = settings.threads
        options.inter_op_num_threads = 1
        # Idle pool threads would otherwise spin between requests and take CPU from the event
        # loop and from neighbouring servers on small machines.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(
            str(settings.model_dir / "model.onnx"),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        signature = read_signature(session)
        profile = load_profile(settings.model_dir / "reference.json")
        session.run(None, smoke_inputs(signature))
        configure_tracking(self.series, signature, profile)
        metadata = orjson.dumps(
            {
                "name": settings.model_name,
                "versions": [settings.model_version],
                "platform": "onnxruntime",
                "inputs": [spec.metadata() for spec in signature.inputs],
                "outputs": [spec.metadata() for spec in signature.outputs],
            }
        )
        self.model = LoadedModel(session, signature, signature.output_names(), metadata)
        logger.info("model %s version %s is ready", settings.model_name, settings.model_version)

    def _load_or_report(self) -> None:
        try:
            self.load()
        except Exception as error:
            logger.exception("could not load %s", self.settings.model_dir / "model.onnx")
            self.load_error = error
            if self.on_load_failure is not None:
                self.on_load_failure(error)

    async def _startup(self) -> None:
        # Loading runs in the background so /v2/health/live answers while a big model loads.
        self._loading = asyncio.get_running_loop().run_in_executor(None, self._load_or_report)

    async def _shutdown(self) -> None:
        self.executor.shutdown(wait=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        elif scope["type"] == "lifespan":
            await run_lifespan(receive, send, self._startup, self._shutdown)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one HTTP request."""
        headers: Headers = scope["headers"]
        response_headers = [
            JSON_TYPE,
            (b"x-request-id", request_id(header(headers, b"x-request-id")).encode()),
            self.version_header,
        ]
        path = scope["path"]
        route = self.routes.get(path.rstrip("/") or "/")
        try:
            if route is None:
                raise RequestError(self._not_found(path), 404)
            method, action = route
            if scope["method"] != method:
                raise RequestError(f"method {scope['method']} is not allowed on {path}", 405)
            pinned = header(headers, b"x-model-version")
            if (
                pinned is not None
                and pinned.decode(errors="replace") != self.settings.model_version
            ):
                raise RequestError(
                    f"this server serves version '{self.settings.model_version}', "
                    f"not '{pinned.decode(errors='replace')}'",
                    404,
                )
            if action in ("infer", "invocations"):
                await self.infer(headers, receive, send, response_headers, action)
                return
            status, body = self._answer_get(action, response_headers)
        except RequestError as error:
            status, body = error.status, error_body(error.message)
        await respond(send, status, body, response_headers)

    def _not_found(self, path: str) -> str:
        name = self.settings.model_name
        parts = path.strip("/").split("/")
        if parts[:2] == ["v2", "models"] and len(parts) >= 3:
            if parts[2] != name:
                return f"unknown model '{parts[2]}'; this server serves '{name}'"
            if len(parts) >= 5 and parts[3] == "versions":
                return (
                    f"model '{name}' has no version '{parts[4]}'; this server serves "
                    f"version '{self.settings.model_version}'"
                )
        return f"no route for {path}"

    def _answer_get(self, action: str, response_headers: Headers) -> tuple[int, bytes]:
        if action == "live":
            return 200, b'{"live":true}'
        if action == "metrics":
            response_headers[0] = (b"content-type", CONTENT_TYPE.encode())
            return 200, self.metrics.render()
        if action == "server_metadata":
            return 200, self.server_metadata
        model = self.model
        if action in ("ready", "model_ready"):
            if model is None:
                return 503, b'{"ready":false}'
            return 200, b'{"ready":true}'
        if model is None:
            raise RequestError("the model is still loading", 503)
        return 200, model.metadata

    async def infer(
        self, headers: Headers, receive: Receive, send: Send, response_headers: Headers, action: str
    ) -> None:
        """Answer one inference request (v2 infer or /invocations) and count it."""
        series = self.series
        series.in_flight += 1
        started = perf_counter()
        try:
            status, body = await self._infer(headers, receive, response_headers, action)
        except ClientDisconnected:
            series.in_flight -= 1
            series.record_request(499, perf_counter() - started)
            return
        except RequestError as error:
            # After a 413, uvicorn reads and drops the rest of the body, so the client sees the
            # answer instead of a reset connection.
            status, body = error.status, error_body(error.message)
        except Exception as error:
            logger.exception("inference failed")
            status, body = 500, error_body(f"inference failed: {error}")
        series.in_flight -= 1
        await respond(send, status, body, response_headers)
        series.record_request(status, perf_counter() - started)

    async def _infer(
        self, headers: Headers, receive: Receive, response_headers: Headers, action: str
    ) -> tuple[int, bytes]:
        settings = self.settings
        model = self.model
        if model is None:
            raise RequestError("the model is still loading", 503)
        body = await read_body(headers, receive, settings.max_body_bytes)
        if action == "infer":
            request = parse_infer_request(body, _header_length(headers))
            feeds, rows = bind_request(model.signature, request, settings.max_rows)
            wanted = request.outputs if request.outputs is not None else model.output_names
        else:
            feeds, rows = bind_invocation(model.signature, load_json(body), settings.max_rows)
            wanted = model.output_names
        outputs = await self._run(model, feeds, wanted, rows)
        if action == "infer":
            answer, header_length = encode_infer_response(
                model_name=settings.model_name,
                model_version=settings.model_version,
                request_id=request.id,
                outputs=[(name, outputs[name], request.wants_binary(name)) for name in wanted],
            )
            if header_length is not None:
                response_headers.append(
                    (b"inference-header-content-length", str(header_length).encode())
                )
            return 200, answer
        document = {"outputs": {name: invocation_value(outputs[name]) for name in wanted}}
        return 200, orjson.dumps(document, option=JSON_OPTIONS)

    async def _run(
        self, model: LoadedModel, feeds: dict[str, np.ndarray], wanted: list[str], rows: int
    ) -> dict[str, Any]:
        names = list(wanted)
        prediction = self.series.prediction
        if prediction is not None and prediction.output not in names:
            # the prediction output is always computed so that its metrics stay complete
            names.append(prediction.output)
        elements = sum(array.size for array in feeds.values())
        if elements <= INLINE_ELEMENTS:
            values, seconds = _timed_run(model.session, names, feeds)
        else:
            loop = asyncio.get_running_loop()
            values, seconds = await loop.run_in_executor(
                self.executor, _timed_run, model.session, names, feeds
            )
        outputs = dict(zip(names, values, strict=True))
        try:
            self.series.record_batch(feeds, outputs, rows, seconds)
        except Exception:
            # metrics must never cost a caller their answer
            logger.exception("could not record the metrics of a batch")
        return outputs


def _timed_run(
    session: onnxruntime.InferenceSession, names: list[str], feeds: dict[str, np.ndarray]
) -> tuple[list[Any], float]:
    started = perf_counter()
    values = session.run(names, feeds)
    return values, perf_counter() - started


def _header_length(headers: Headers) -> int | None:
    value = header(headers, b"inference-header-content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise RequestError("Inference-Header-Content-Length is not a number") from None
