"""The version server: one model version over Open Inference Protocol v2, as a raw ASGI app."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
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
    compress_response,
    decode_body,
    error_body,
    header,
    read_body,
    request_id,
    respond,
    run_lifespan,
)
from modeldeck_runtime.batching import Batcher
from modeldeck_runtime.codec import (
    InferRequest,
    NonFinite,
    RequestError,
    encode_infer_response,
    invocation_value,
    load_json,
    parse_infer_request,
)
from modeldeck_runtime.httpserver import Write
from modeldeck_runtime.metrics import CONTENT_TYPE, ServingMetrics, merge_expositions
from modeldeck_runtime.profile import configure_tracking, load_profile
from modeldeck_runtime.signature import (
    DYNAMIC,
    Signature,
    bind_invocation,
    bind_request,
    read_signature,
    smoke_inputs,
)
from modeldeck_runtime.versions import names_version, split_versioned_path

logger = logging.getLogger("modeldeck.server")

WORKER_LOCAL_HEADER = b"x-modeldeck-worker-local"
SMOKE_FILE = "smoke.json"
SMOKE_MAX_ROWS = 8
OUT_OF_MEMORY = "this inference needs more memory than this server may use; send fewer rows"

# Small batches run on the event loop: a hop to a worker thread costs more than they do.
INLINE_ELEMENTS = 16384
INFER_ACTIONS = frozenset({"infer", "invocations"})


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
    # An inference whose outputs add up to more is answered 507, not served.
    max_output_bytes: int = 64 * 1024 * 1024
    # With several worker processes on one port: the unix sockets of the other workers (their
    # metrics join this one's) and whether to load the model before listening (a worker that
    # is not the first must not take connections it cannot serve yet).
    sibling_sockets: tuple[str, ...] = ()
    load_before_listening: bool = False
    # Opt-in dynamic batching (0: off): requests with fewer rows wait up to the delay for others
    # and run in one onnxruntime call of at most this many rows.
    batch_max_rows: int = 0
    batch_max_delay_us: int = 500


@dataclass(frozen=True)
class LoadedModel:
    """An onnxruntime session that passed its smoke inference."""

    session: onnxruntime.InferenceSession
    signature: Signature
    output_names: list[str]
    metadata: bytes


@dataclass(slots=True)
class _Call:
    """One inference request, read and checked against the model it will run on."""

    model: LoadedModel
    feeds: dict[str, np.ndarray]
    rows: int
    wanted: list[str]
    request: InferRequest | None  # None for /invocations


@dataclass(slots=True)
class _Reply:
    """Where and how an inference's answer goes, and when its request arrived."""

    headers: Headers
    response_headers: Headers
    write: Write
    started: float


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
        self.batcher: Batcher | None = None
        self.load_error: BaseException | None = None
        self._loading: asyncio.Future[None] | None = None
        self._all_listening = not settings.sibling_sockets
        self.metrics = ServingMetrics(endpoint=settings.endpoint, component="server")
        self.series = self.metrics.variant(settings.model_version, settings.variant)
        self.version_header = (b"x-model-version", settings.model_version.encode())
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="inference")
        model_path = f"/v2/models/{settings.model_name}"
        self.routes: dict[str, tuple[str, str]] = {
            "/v2/health/live": ("GET", "live"),
            "/v2/health/ready": ("GET", "ready"),
            "/v2": ("GET", "server_metadata"),
            "/metrics": ("GET", "metrics"),
            "/invocations": ("POST", "invocations"),
            model_path: ("GET", "model_metadata"),
            f"{model_path}/ready": ("GET", "model_ready"),
            f"{model_path}/infer": ("POST", "infer"),
        }
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
        smoke_warning = self._smoke(session, signature)
        configure_tracking(self.series, signature, profile)
        document: dict[str, Any] = {
            "name": settings.model_name,
            "versions": [settings.model_version],
            "platform": "onnxruntime",
            "inputs": [spec.metadata() for spec in signature.inputs],
            "outputs": [spec.metadata() for spec in signature.outputs],
        }
        if smoke_warning is not None:
            document["parameters"] = {"smoke_warning": smoke_warning}
        self.metrics.smoke_warning = smoke_warning
        metadata = orjson.dumps(document)
        self.model = LoadedModel(session, signature, signature.output_names(), metadata)
        self.batcher = self._batcher(signature)
        logger.info("model %s version %s is ready", settings.model_name, settings.model_version)

    def _batcher(self, signature: Signature) -> Batcher | None:
        settings = self.settings
        if not settings.batch_max_rows:
            return None
        if not all(spec.shape and spec.shape[0] == DYNAMIC for spec in signature.inputs):
            logger.warning("dynamic batching is off: an input has no dynamic first dimension")
            return None
        return Batcher(
            self._batch_run,
            self._record,
            settings.batch_max_rows,
            settings.batch_max_delay_us / 1e6,
        )

    def _smoke(self, session: onnxruntime.InferenceSession, signature: Signature) -> str | None:
        """Run the start-up smoke inference; the warning to show when a zeros smoke failed.

        With `smoke.json` (a v2 request built from the version's reference rows), a failure
        refuses the start: those are rows the model must answer. Without it, rows of zeros may
        be out of the model's domain (a log of zero, a category that does not exist), so a
        failure only warns once the model has loaded.
        """
        path = self.settings.model_dir / SMOKE_FILE
        if path.is_file():
            body = path.read_bytes()
            if len(body) > self.settings.max_body_bytes:
                raise ValueError(f"{SMOKE_FILE} is larger than the body limit")
            try:
                request = parse_infer_request(body, None)
                feeds, _ = bind_request(signature, request, SMOKE_MAX_ROWS)
            except RequestError as error:
                raise ValueError(f"{SMOKE_FILE} is not a valid request: {error.message}") from None
            try:
                session.run(None, feeds)
            except Exception as error:
                raise ValueError(f"the smoke inference of {SMOKE_FILE} failed: {error}") from None
            return None
        try:
            session.run(None, smoke_inputs(signature))
        except Exception as error:
            warning = f"the smoke inference with rows of zeros failed: {error}"[:500]
            logger.warning("%s (serving anyway: the model loaded)", warning)
            return warning
        return None

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
        if self.settings.load_before_listening:
            await self._loading
            if self.load_error is not None:
                raise RuntimeError(f"could not load the model: {self.load_error}")

    async def _shutdown(self) -> None:
        self.executor.shutdown(wait=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        elif scope["type"] == "lifespan":
            await run_lifespan(receive, send, self._startup, self._shutdown)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one HTTP request over ASGI (under uvicorn): read an inference's body, then
        answer exactly as the direct interface does."""
        headers: Headers = scope["headers"]
        method, path = scope["method"], scope["path"]
        body: bytes | RequestError = b""
        if self._takes_body(method, path, headers):
            started = perf_counter()
            try:
                body = await read_body(headers, receive, self.settings.max_body_bytes)
            except ClientDisconnected:
                self.series.record_request(499, perf_counter() - started)
                return
            except RequestError as error:
                # After a 413, uvicorn reads and drops the rest of the body, so the client sees
                # the answer instead of a reset connection.
                body = error
        answers: list[tuple[int, Headers, bytes]] = []

        def write(status: int, response_headers: Headers, answer: bytes) -> None:
            answers.append((status, response_headers, answer))

        pending = self._answer(method, path, headers, body, write)
        if pending is not None:
            await pending
        status, response_headers, answer = answers[0]
        await respond(send, status, answer, response_headers)

    def answer(
        self, method: str, path: str, headers: Headers, body: bytes | None, write: Write
    ) -> Awaitable[None] | None:
        """Answer one whole request through write(status, headers, body), the built-in HTTP
        server's direct interface: before returning when nothing has to wait (every route but
        an inference that is batched or large enough for a worker thread), else by the time the
        returned awaitable is done. body is None when it was larger than the server's cap."""
        limit = self.settings.max_body_bytes
        if body is None or len(body) > limit:
            return self._answer(
                method,
                path,
                headers,
                RequestError(f"request body is larger than the limit of {limit} bytes", 413),
                write,
            )
        return self._answer(method, path, headers, body, write)

    def _takes_body(self, method: str, path: str, headers: Headers) -> bool:
        try:
            return self._route(method, path, headers, []) in INFER_ACTIONS
        except RequestError:
            return False

    def _route(self, method: str, path: str, headers: Headers, response_headers: Headers) -> str:
        """The action of a request, or the 404/405 that says why there is none."""
        route = self.routes.get(path.rstrip("/") or "/") or self._versioned_route(path)
        allowed, action = route
        if method != allowed and not (allowed == "GET" and method == "HEAD"):
            response_headers.append(
                (b"allow", b"GET, HEAD" if allowed == "GET" else allowed.encode())
            )
            raise RequestError(f"method {method} is not allowed on {path}", 405)
        pinned = header(headers, b"x-model-version")
        if pinned is not None:
            self._check_version(pinned.decode(errors="replace").strip())
        return action

    def _answer(
        self,
        method: str,
        path: str,
        headers: Headers,
        body: bytes | RequestError,
        write: Write,
    ) -> Awaitable[None] | None:
        response_headers = [
            JSON_TYPE,
            (b"x-request-id", request_id(header(headers, b"x-request-id")).encode()),
            self.version_header,
        ]
        try:
            action = self._route(method, path, headers, response_headers)
            if action in INFER_ACTIONS:
                return self.infer(headers, body, response_headers, action, write)
            if action == "metrics" and self.settings.sibling_sockets:
                response_headers[0] = (b"content-type", CONTENT_TYPE.encode())
                return self._answer_all_metrics(headers, response_headers, write)
            status, answer = self._answer_get(action, response_headers)
        except RequestError as error:
            status, answer = error.status, error_body(error.message)
        _write_compressed(write, headers, status, answer, response_headers)
        return None

    async def _answer_all_metrics(
        self, headers: Headers, response_headers: Headers, write: Write
    ) -> None:
        answer = await self._all_workers_metrics(headers)
        _write_compressed(write, headers, 200, answer, response_headers)

    def _versioned_route(self, path: str) -> tuple[str, str]:
        """The route of `/v2/models/{m}/versions/{v}[/ready|/infer]`, or a 404 that says why."""
        name = self.settings.model_name
        versioned = split_versioned_path(path)
        if versioned is not None:
            model, version, rest = versioned
            if model == name:
                self._check_version(version)
                route = self.routes.get(
                    f"/v2/models/{name}/{rest}" if rest else f"/v2/models/{name}"
                )
                if route is not None:
                    return route
        parts = path.strip("/").split("/")
        if parts[:2] == ["v2", "models"] and len(parts) >= 3 and parts[2] != name:
            raise RequestError(f"unknown model '{parts[2]}'; this server serves '{name}'", 404)
        raise RequestError(f"no route for {path}", 404)

    def _check_version(self, requested: str) -> None:
        served = self.settings.model_version
        if not names_version(requested, served):
            raise RequestError(
                f"model '{self.settings.model_name}' has no version '{requested}'; "
                f"versions that exist: {served}",
                404,
            )

    async def _all_workers_metrics(self, headers: Headers) -> bytes:
        """This worker's metrics merged with its siblings' (only its own when a sibling asks)."""
        own = self.metrics.render()
        if header(headers, WORKER_LOCAL_HEADER) is not None:
            return own
        texts = [own]
        answers = await asyncio.gather(
            *(_fetch_local_metrics(path) for path in self.settings.sibling_sockets),
            return_exceptions=True,
        )
        for path, answer in zip(self.settings.sibling_sockets, answers, strict=True):
            if isinstance(answer, bytes):
                texts.append(answer)
            else:
                logger.warning("no metrics from the worker at %s: %s", path, answer)
        return merge_expositions(texts)

    def _workers_listening(self) -> bool:
        """Every sibling worker has loaded the model and listens (it binds only then)."""
        if self._all_listening:
            return True
        self._all_listening = all(os.path.exists(path) for path in self.settings.sibling_sockets)
        return self._all_listening

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
            if model is None or not self._workers_listening():
                return 503, b'{"ready":false}'
            return 200, b'{"ready":true}'
        if model is None:
            raise RequestError("the model is still loading", 503)
        return 200, model.metadata

    def infer(
        self,
        headers: Headers,
        body: bytes | RequestError,
        response_headers: Headers,
        action: str,
        write: Write,
    ) -> Awaitable[None] | None:
        """Answer one inference request (v2 infer or /invocations) and count it: at once when
        it runs on the event loop, else by the time the returned awaitable is done (batched, or
        large enough for a worker thread)."""
        self.series.in_flight += 1
        started = perf_counter()
        try:
            call = self._prepare(headers, body, action)
            if self.batcher is not None and call.rows < self.settings.batch_max_rows:
                answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                reply = _Reply(headers, response_headers, write, started)
                self.batcher.submit(
                    call.feeds, call.rows, partial(self._batched, call, reply, answered)
                )
                return answered
            names = self._names(call)
            if sum(array.size for array in call.feeds.values()) > INLINE_ELEMENTS:
                reply = _Reply(headers, response_headers, write, started)
                return self._infer_on_thread(call, names, reply)
            outputs, seconds = _run_inline(call.model, names, call.feeds)
            status, answer = self._answer_of_run(call, outputs, seconds, response_headers)
        except Exception as error:
            status, answer = _failure(error)
        self._reply(_Reply(headers, response_headers, write, started), status, answer)
        return None

    def _batched(
        self,
        call: _Call,
        reply: _Reply,
        answered: asyncio.Future[None],
        outputs: dict[str, Any] | None,
        error: Exception | None,
    ) -> None:
        """The batcher's answer for one request."""
        try:
            if error is not None:
                raise error
            assert outputs is not None
            self._check_output_size(outputs)
            status, answer = self._encode(call, outputs, reply.response_headers)
        except Exception as failure:
            status, answer = _failure(failure)
        self._reply(reply, status, answer)
        if not answered.done():
            answered.set_result(None)

    async def _infer_on_thread(self, call: _Call, names: list[str], reply: _Reply) -> None:
        try:
            outputs, seconds = await self._session_run(call.model, names, call.feeds)
            status, answer = self._answer_of_run(call, outputs, seconds, reply.response_headers)
        except Exception as error:
            status, answer = _failure(error)
        self._reply(reply, status, answer)

    def _answer_of_run(
        self, call: _Call, outputs: dict[str, Any], seconds: float, response_headers: Headers
    ) -> tuple[int, bytes]:
        """The answer to one request that ran alone: its outputs checked, counted, encoded."""
        self._check_output_size(outputs)
        self._record(call.feeds, outputs, [call.rows], seconds)
        return self._encode(call, outputs, response_headers)

    def _reply(self, reply: _Reply, status: int, answer: bytes) -> None:
        """Write an inference's answer and count it."""
        series = self.series
        series.in_flight -= 1
        _write_compressed(reply.write, reply.headers, status, answer, reply.response_headers)
        series.record_request(status, perf_counter() - reply.started)

    def _prepare(self, headers: Headers, body: bytes | RequestError, action: str) -> _Call:
        """Read and check a request against the model: its feeds, rows and wanted outputs."""
        settings = self.settings
        model = self.model
        if model is None:
            raise RequestError("the model is still loading", 503)
        if isinstance(body, RequestError):
            raise body
        body = decode_body(headers, body, settings.max_body_bytes)
        if action == "infer":
            request = parse_infer_request(body, _header_length(headers))
            feeds, rows = bind_request(model.signature, request, settings.max_rows)
            wanted = request.outputs if request.outputs is not None else model.output_names
            return _Call(model, feeds, rows, wanted, request)
        feeds, rows = bind_invocation(model.signature, load_json(body), settings.max_rows)
        return _Call(model, feeds, rows, model.output_names, None)

    def _names(self, call: _Call) -> list[str]:
        """The outputs to compute: those wanted, and the one whose predictions are counted."""
        names = list(call.wanted)
        prediction = self.series.prediction
        if prediction is not None and prediction.output not in names:
            # the prediction output is always computed so that its metrics stay complete
            names.append(prediction.output)
        return names

    def _encode(
        self, call: _Call, outputs: dict[str, Any], response_headers: Headers
    ) -> tuple[int, bytes]:
        settings = self.settings
        request = call.request
        if request is not None:
            answer, header_length = encode_infer_response(
                model_name=settings.model_name,
                model_version=settings.model_version,
                request_id=request.id,
                outputs=[(name, outputs[name], request.wants_binary(name)) for name in call.wanted],
            )
            if header_length is not None:
                response_headers.append(
                    (b"inference-header-content-length", str(header_length).encode())
                )
            return 200, answer
        nonfinite = NonFinite()
        document = {
            "outputs": {
                name: nonfinite.hold(invocation_value(outputs[name])) for name in call.wanted
            }
        }
        return 200, nonfinite.dumps(document)

    async def _session_run(
        self, model: LoadedModel, names: list[str], feeds: dict[str, np.ndarray]
    ) -> tuple[dict[str, Any], float]:
        """Run onnxruntime: on the event loop when small, else on a worker thread."""
        if sum(array.size for array in feeds.values()) <= INLINE_ELEMENTS:
            return _run_inline(model, names, feeds)
        loop = asyncio.get_running_loop()
        try:
            values, seconds = await loop.run_in_executor(
                self.executor, _timed_run, model.session, names, feeds
            )
        except Exception as error:
            raise _refusal(error) from None
        return dict(zip(names, values, strict=True)), seconds

    async def _batch_run(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, Any], float]:
        model = self.model
        assert model is not None  # batching starts only once the model is loaded
        return await self._session_run(model, model.output_names, feeds)

    def _check_output_size(self, outputs: dict[str, Any]) -> None:
        size = sum(value.nbytes for value in outputs.values() if isinstance(value, np.ndarray))
        if size > self.settings.max_output_bytes:
            raise RequestError(
                f"the outputs of this inference take {size} bytes, more than the limit of "
                f"{self.settings.max_output_bytes} bytes; send fewer rows",
                507,
            )

    def _record(
        self,
        feeds: dict[str, np.ndarray],
        outputs: dict[str, Any],
        rows: list[int],
        seconds: float,
    ) -> None:
        try:
            self.series.record_batch(feeds, outputs, rows, seconds)
        except Exception:
            # metrics must never cost a caller their answer
            logger.exception("could not record the metrics of a batch")


async def _fetch_local_metrics(path: str) -> bytes:
    """GET /metrics from a sibling worker over its unix socket: its own series only."""
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), 2)
    try:
        writer.write(
            b"GET /metrics HTTP/1.1\r\nhost: worker\r\n%s: 1\r\nconnection: close\r\n\r\n"
            % WORKER_LOCAL_HEADER
        )
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise OSError(f"the worker answered {head[:40]!r}")
    return body


def _run_inline(
    model: LoadedModel, names: list[str], feeds: dict[str, np.ndarray]
) -> tuple[dict[str, Any], float]:
    try:
        values, seconds = _timed_run(model.session, names, feeds)
    except Exception as error:
        raise _refusal(error) from None
    return dict(zip(names, values, strict=True)), seconds


def _refusal(error: Exception) -> Exception:
    """What a failed onnxruntime call becomes: a 507 when it ran out of memory."""
    if isinstance(error, MemoryError) or _is_allocation_failure(error):
        return RequestError(OUT_OF_MEMORY, 507)
    return error


def _is_allocation_failure(error: Exception) -> bool:
    """onnxruntime reports a failed allocation as a RuntimeException naming it."""
    text = str(error).lower()
    return any(
        sign in text
        for sign in (
            "bad_alloc",
            "failed to allocate",
            "allocate memory",
            "exceeds the supported maximum",
        )
    )


def _failure(error: Exception) -> tuple[int, bytes]:
    """The answer to an inference that failed: its client error, or a logged 500."""
    if isinstance(error, RequestError):
        return error.status, error_body(error.message)
    logger.error("inference failed", exc_info=error)
    return 500, error_body(f"inference failed: {error}")


def _write_compressed(
    write: Write, headers: Headers, status: int, body: bytes, response_headers: Headers
) -> None:
    write(status, response_headers, compress_response(headers, body, response_headers))


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
