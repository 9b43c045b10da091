"""Command lines: `modeldeck-serve` (version server) and `modeldeck-gateway`."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn

from modeldeck_runtime.gateway import Gateway, GatewaySettings, load_initial_table
from modeldeck_runtime.httpserver import HttpServer, Limits
from modeldeck_runtime.server import ServerSettings, VersionServer

# mallopt's parameter number for the arena cap (glibc malloc.h)
M_ARENA_MAX = -8


def _env(name: str, default: Any = None) -> Any:
    return os.environ.get(name, default)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _common(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument("--host", default=_env("MODELDECK_HOST", "127.0.0.1"))
    parser.add_argument(
        "--port", type=_positive_int, default=int(_env("MODELDECK_PORT", default_port))
    )
    parser.add_argument("--endpoint", default=_env("MODELDECK_ENDPOINT", ""))
    parser.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=int(_env("MODELDECK_MAX_BODY_BYTES", 32 * 1024 * 1024)),
    )
    parser.add_argument(
        "--drain-seconds",
        type=_positive_int,
        default=int(_env("MODELDECK_DRAIN_SECONDS", 30)),
        help="on SIGTERM, how long to wait for in-flight requests",
    )
    defaults = Limits()
    limits = parser.add_argument_group("HTTP limits (the built-in server)")
    limits.add_argument(
        "--max-request-line-bytes",
        type=_positive_int,
        default=int(_env("MODELDECK_MAX_REQUEST_LINE_BYTES", defaults.max_request_line_bytes)),
        help="longest request target (414 beyond)",
    )
    limits.add_argument(
        "--max-header-bytes",
        type=_positive_int,
        default=int(_env("MODELDECK_MAX_HEADER_BYTES", defaults.max_header_bytes)),
        help="largest total of request headers (431 beyond)",
    )
    limits.add_argument(
        "--max-headers",
        type=_positive_int,
        default=int(_env("MODELDECK_MAX_HEADERS", defaults.max_headers)),
        help="most request headers (431 beyond)",
    )
    limits.add_argument(
        "--header-timeout",
        type=_positive_float,
        default=float(_env("MODELDECK_HEADER_TIMEOUT_SECONDS", defaults.header_timeout)),
        help="seconds a client has to send a whole request head (408 after)",
    )
    limits.add_argument(
        "--idle-timeout",
        type=_positive_float,
        default=float(_env("MODELDECK_IDLE_TIMEOUT_SECONDS", defaults.idle_timeout)),
        help="seconds an idle keep-alive connection stays open",
    )
    limits.add_argument(
        "--max-connections",
        type=_positive_int,
        default=int(_env("MODELDECK_MAX_CONNECTIONS", defaults.max_connections)),
        help="open connections at most (503 and closed beyond)",
    )
    parser.add_argument("--log-level", default=_env("MODELDECK_LOG_LEVEL", "warning"))
    parser.add_argument(
        "--http",
        choices=("builtin", "uvicorn"),
        default=_env("MODELDECK_HTTP", "builtin"),
        help="HTTP server: the runtime's own (one write per response) or uvicorn",
    )


def serve_parser() -> argparse.ArgumentParser:
    """Arguments of modeldeck-serve; each has an environment variable default."""
    parser = argparse.ArgumentParser(
        prog="modeldeck-serve", description="Serve one model version (model.onnx) over HTTP."
    )
    parser.add_argument("--model-dir", default=_env("MODELDECK_MODEL_DIR"))
    parser.add_argument("--model-name", default=_env("MODELDECK_MODEL_NAME", "model"))
    parser.add_argument("--model-version", default=_env("MODELDECK_MODEL_VERSION", "1"))
    parser.add_argument("--variant", default=_env("MODELDECK_VARIANT", "primary"))
    parser.add_argument(
        "--max-rows", type=_positive_int, default=int(_env("MODELDECK_MAX_ROWS", 10000))
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=int(_env("MODELDECK_THREADS", 0)),
        help="onnxruntime intra-op threads (0: onnxruntime's default)",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=int(_env("MODELDECK_WORKERS", 1)),
        help="server processes sharing the port (SO_REUSEPORT); at most the cores it is given",
    )
    parser.add_argument(
        "--batch-max-rows",
        type=_positive_int,
        default=int(_env("MODELDECK_BATCH_MAX_ROWS", 0)),
        help="dynamic batching: rows of one merged onnxruntime call (0: no batching)",
    )
    parser.add_argument(
        "--batch-max-delay-us",
        type=_positive_int,
        default=int(_env("MODELDECK_BATCH_MAX_DELAY_US", 500)),
        help="dynamic batching: how long a request may wait for others, in microseconds "
        "(0: batch only the requests that arrived in the same turn of the event loop)",
    )
    parser.add_argument(
        "--memory-limit-mb",
        type=_positive_int,
        default=int(_env("MODELDECK_MEMORY_LIMIT_MB", 0)),
        help="address-space limit of this server in MiB (RLIMIT_AS; 0: none)",
    )
    parser.add_argument(
        "--max-output-bytes",
        type=_positive_int,
        default=int(_env("MODELDECK_MAX_OUTPUT_BYTES", 64 * 1024 * 1024)),
        help="largest total size of one inference's outputs (507 beyond)",
    )
    _common(parser, 8080)
    return parser


def gateway_parser() -> argparse.ArgumentParser:
    """Arguments of modeldeck-gateway; each has an environment variable default."""
    parser = argparse.ArgumentParser(
        prog="modeldeck-gateway", description="Route an endpoint's traffic to version servers."
    )
    parser.add_argument("--admin-token", default=_env("MODELDECK_GATEWAY_ADMIN_TOKEN"))
    parser.add_argument("--routes-file", default=_env("MODELDECK_GATEWAY_ROUTES_FILE"))
    parser.add_argument("--state-file", default=_env("MODELDECK_GATEWAY_STATE_FILE"))
    parser.add_argument(
        "--upstream-timeout",
        type=float,
        default=float(_env("MODELDECK_GATEWAY_UPSTREAM_TIMEOUT", 30)),
    )
    parser.add_argument(
        "--shadow-timeout", type=float, default=float(_env("MODELDECK_GATEWAY_SHADOW_TIMEOUT", 5))
    )
    parser.add_argument(
        "--prediction-log-url",
        default=_env("MODELDECK_GATEWAY_PREDICTION_LOG_URL", ""),
        help="the dashboard's ingest URL for the prediction log (empty: no log)",
    )
    parser.add_argument(
        "--prediction-log-flush-seconds",
        type=float,
        default=float(_env("MODELDECK_GATEWAY_PREDICTION_LOG_FLUSH_SECONDS", 1)),
    )
    _common(parser, 8000)
    return parser


def _loop() -> str:
    return "asyncio" if sys.platform == "win32" else "uvloop"


def _run(
    app: Any, arguments: argparse.Namespace, workers: Workers | None = None
) -> HttpServer | uvicorn.Server:
    logging.basicConfig(
        level=arguments.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if arguments.http == "builtin":
        return HttpServer(
            app,
            host=arguments.host,
            port=arguments.port,
            max_body_bytes=arguments.max_body_bytes,
            limits=Limits(
                max_request_line_bytes=arguments.max_request_line_bytes,
                max_header_bytes=arguments.max_header_bytes,
                max_headers=arguments.max_headers,
                header_timeout=arguments.header_timeout,
                idle_timeout=arguments.idle_timeout,
                max_connections=arguments.max_connections,
            ),
            drain_seconds=arguments.drain_seconds,
            reuse_port=workers is not None,
            unix_path=workers.own_socket if workers is not None else None,
        )
    config = uvicorn.Config(
        app,
        host=arguments.host,
        port=arguments.port,
        loop=_loop(),
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=arguments.log_level,
        timeout_keep_alive=int(arguments.idle_timeout),
        limit_concurrency=arguments.max_connections,
        timeout_graceful_shutdown=arguments.drain_seconds,
        server_header=False,
        date_header=False,
    )
    return uvicorn.Server(config)


def limit_memory(megabytes: int) -> None:
    """Cap this process's address space (RLIMIT_AS) at megabytes MiB.

    An allocation past the cap fails (MemoryError, or an onnxruntime allocation error) and the
    request is answered 507, instead of the machine swapping or the OOM killer choosing a
    victim. glibc reserves 64 MiB of address space per thread arena, so the arenas are capped
    first or idle thread pools would use up the limit.
    """
    import resource

    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, 2)
    limit = megabytes * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def serve_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of modeldeck-serve."""
    parser = serve_parser()
    arguments = parser.parse_args(argv)
    if not arguments.model_dir:
        parser.error("--model-dir (or MODELDECK_MODEL_DIR) is required")
    model_dir = Path(arguments.model_dir)
    if not (model_dir / "model.onnx").is_file():
        parser.error(f"{model_dir / 'model.onnx'} does not exist")
    if arguments.memory_limit_mb:
        try:
            limit_memory(arguments.memory_limit_mb)
        except (ValueError, OSError) as error:
            parser.error(f"could not set the memory limit: {error}")
    settings = ServerSettings(
        model_dir=model_dir,
        model_name=arguments.model_name,
        model_version=arguments.model_version,
        endpoint=arguments.endpoint or arguments.model_name,
        variant=arguments.variant,
        max_rows=arguments.max_rows,
        max_body_bytes=arguments.max_body_bytes,
        threads=arguments.threads,
        max_output_bytes=arguments.max_output_bytes,
        batch_max_rows=arguments.batch_max_rows,
        batch_max_delay_us=arguments.batch_max_delay_us,
    )
    workers = Workers.from_environment(arguments, argv) if arguments.workers > 1 else None
    if workers is not None and arguments.http != "builtin":
        parser.error("--workers needs the built-in HTTP server")
    if workers is not None:
        settings = dataclasses.replace(
            settings,
            sibling_sockets=workers.sibling_sockets,
            load_before_listening=workers.index > 0,
        )
    app = VersionServer(settings)
    server = _run(app, arguments, workers)

    def stop(_: BaseException) -> None:
        if isinstance(server, HttpServer):
            server.request_exit()
        else:
            server.should_exit = True

    app.on_load_failure = stop
    if workers is not None and workers.index == 0:
        workers.start_siblings(on_exit=stop)
    try:
        status = server.run()
    finally:
        if workers is not None:
            workers.stop_siblings()
    return 1 if app.load_error is not None or (workers and workers.failed) else status or 0


class Workers:
    """Several server processes of one version on one port (SO_REUSEPORT).

    The first process (the one a target starts) starts the others with the same arguments and
    stops them when it stops; if one of them exits on its own, the first stops too, so whatever
    supervises the server restarts the whole version. Each worker also listens on a unix socket
    in a private folder, where the worker a scrape reaches collects its siblings' metrics.
    """

    def __init__(self, count: int, index: int, folder: Path, argv: list[str]) -> None:
        self.count = count
        self.index = index
        self.folder = folder
        self.argv = argv
        self.children: list[subprocess.Popen] = []
        self.failed = False
        self.stopping = False

    @classmethod
    def from_environment(cls, arguments: argparse.Namespace, argv: Sequence[str] | None) -> Workers:
        """The first worker makes the folder; the others find it in their environment."""
        index = int(os.environ.get("MODELDECK_WORKER_INDEX", "0"))
        if index == 0:
            folder = Path(tempfile.mkdtemp(prefix="modeldeck-workers-"))
        else:
            folder = Path(os.environ["MODELDECK_WORKER_DIR"])
        return cls(arguments.workers, index, folder, list(sys.argv[1:] if argv is None else argv))

    def socket_of(self, index: int) -> str:
        return str(self.folder / f"worker-{index}.sock")

    @property
    def own_socket(self) -> str:
        return self.socket_of(self.index)

    @property
    def sibling_sockets(self) -> tuple[str, ...]:
        return tuple(self.socket_of(index) for index in range(self.count) if index != self.index)

    def start_siblings(self, on_exit: Any) -> None:
        """Start workers 1..count-1 and watch them."""
        for index in range(1, self.count):
            environment = {
                **os.environ,
                "MODELDECK_WORKER_INDEX": str(index),
                "MODELDECK_WORKER_DIR": str(self.folder),
            }
            command = [sys.executable, "-m", "modeldeck_runtime", "serve", *self.argv]
            self.children.append(subprocess.Popen(command, env=environment))
        threading.Thread(target=self._watch, args=(on_exit,), daemon=True).start()

    def _watch(self, on_exit: Any) -> None:
        while not self.stopping:
            for child in self.children:
                if child.poll() is not None and not self.stopping:
                    logging.getLogger("modeldeck.server").error(
                        "worker %d exited with %s; stopping this version's server",
                        self.children.index(child) + 1,
                        child.returncode,
                    )
                    self.failed = True
                    on_exit(RuntimeError("a worker exited"))
                    return
            time.sleep(0.2)

    def stop_siblings(self) -> None:
        """SIGTERM every sibling (they drain like the first) and remove the folder."""
        self.stopping = True
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
        if self.index == 0:
            shutil.rmtree(self.folder, ignore_errors=True)


def gateway_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of modeldeck-gateway."""
    parser = gateway_parser()
    arguments = parser.parse_args(argv)
    if not arguments.admin_token:
        parser.error("--admin-token (or MODELDECK_GATEWAY_ADMIN_TOKEN) is required")
    settings = GatewaySettings(
        admin_token=arguments.admin_token,
        endpoint=arguments.endpoint,
        routes_file=Path(arguments.routes_file) if arguments.routes_file else None,
        state_file=Path(arguments.state_file) if arguments.state_file else None,
        upstream_timeout=arguments.upstream_timeout,
        shadow_timeout=arguments.shadow_timeout,
        max_body_bytes=arguments.max_body_bytes,
        prediction_log_url=arguments.prediction_log_url,
        prediction_log_flush_seconds=arguments.prediction_log_flush_seconds,
    )
    try:
        table = load_initial_table(settings)
    except ValueError as error:
        parser.error(str(error))
    server = _run(Gateway(settings, table), arguments)
    return server.run() or 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m modeldeck_runtime serve|gateway ...`."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    commands = {"serve": serve_main, "gateway": gateway_main}
    if not arguments or arguments[0] not in commands:
        print("usage: python -m modeldeck_runtime {serve,gateway} [options]", file=sys.stderr)
        return 2
    return commands[arguments[0]](arguments[1:])
