"""Upload a ~1 GiB ONNX model through the API of a real web server; print memory and speed.

    .venv/bin/python bench/registry_upload.py [--size-mib 1024] [--keep]

Starts gunicorn (one sync worker) on 127.0.0.1 against a fresh SQLite database and artifact
folder in a temporary directory, then uploads, as a CI job would (bearer token, multipart,
streamed from disk):

1. a real ONNX model whose single initializer is --size-mib large (written in a streaming way:
   the protobuf framing is assembled by hand, so this script never holds it in memory);
2. the same valid ONNX header followed by garbage of the same size, which must be refused.

For each it prints the HTTP status, the throughput, and the web worker's resident memory before
and at its peak (VmHWM). The anchor is the size of the upload: memory growth should stay a small
constant (tens of MiB), whatever the size. It prints and never asserts; it is not part of the
test suite.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 4 * 1024 * 1024


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_field(number: int, length: int) -> bytes:
    return varint(number << 3 | 2) + varint(length)


def write_large_onnx(path: Path, *, side: int, garbage: bool = False) -> int:
    """y = x @ W with W a side x side float32 initializer (side² x 4 bytes), written streaming.

    The model is the small part serialised by onnx, then a second `graph` field holding only
    the initializer: protobuf merges both, and the big raw_data is written chunk by chunk.
    With `garbage`, the bytes after the header are random instead of a valid initializer.
    """
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, side])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="modeldeck-bench"
    )
    model.ir_version = 8
    head = model.SerializeToString()
    raw_bytes = side * side * 4
    tensor_head = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[side, side])
    tensor_prefix = tensor_head.SerializeToString() + length_field(9, raw_bytes)
    tensor_length = len(tensor_prefix) + raw_bytes
    graph_part = length_field(5, tensor_length)
    graph_length = len(graph_part) + tensor_length
    rng = np.random.default_rng(0)
    with open(path, "wb") as out:
        out.write(head)
        out.write(length_field(7, graph_length))
        if garbage:
            remaining = graph_length
            while remaining:
                size = min(CHUNK, remaining)
                out.write(rng.bytes(size))
                remaining -= size
        else:
            out.write(graph_part)
            out.write(tensor_prefix)
            block = (rng.standard_normal(CHUNK // 4, dtype=np.float32) * 0.01).tobytes()
            remaining = raw_bytes
            while remaining:
                size = min(CHUNK, remaining)
                out.write(block[:size])
                remaining -= size
    return path.stat().st_size


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def multipart_stream(path: Path, boundary: str):
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + path.stat().st_size + len(tail)

    def body():
        yield head
        with open(path, "rb") as stream:
            while chunk := stream.read(CHUNK):
                yield chunk
        yield tail

    return body(), length


def manage(env: dict, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if result.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout.strip()


def upload(url: str, token: str, path: Path) -> tuple[int, str, float]:
    boundary = secrets.token_hex(12)
    body, length = multipart_stream(path, boundary)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Length": str(length),
        "Content-Type": f"multipart/form-data; boundary={boundary}",
    }
    started = time.perf_counter()
    response = httpx.post(
        f"{url}/api/v1/models/bench/versions/", content=body, headers=headers, timeout=900
    )
    return response.status_code, response.text[:300], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="modeldeck-bench-upload-"))
    (folder / "var").mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}},
        "DEBUG": "true",
        "MODELDECK_VAR_DIR": str(folder / "var"),
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "CELERY_BROKER_URL": "memory://",
        "SECRET_KEY": "bench-" + secrets.token_hex(16),
        "MODELDECK_MAX_UPLOAD_BYTES": str(4 * 1024**3),
    }
    side = int((args.size_mib * 1024 * 1024 / 4) ** 0.5)
    model_path, garbage_path = folder / "large.onnx", folder / "garbage.onnx"
    print(f"writing a {args.size_mib} MiB model (W: {side} x {side} float32) …", flush=True)
    size = write_large_onnx(model_path, side=side)
    write_large_onnx(garbage_path, side=side, garbage=True)
    manage(env, "migrate", "-v0")
    manage(env, "addmember", "bench", "bench", "scientist", "--create-user")
    token = manage(env, "createtoken", "bench", "bench").splitlines()[-1]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "config.wsgi",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            "1",
            "--timeout",
            "900",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        headers = {"Authorization": f"Bearer {token}"}
        httpx.post(f"{url}/api/v1/models/", json={"name": "bench"}, headers=headers)
        worker = children_of(server.pid)[0]
        print(f"gunicorn worker {worker}; file {size / 2**20:.0f} MiB")
        print(
            f"{'case':<28}{'status':>7}{'seconds':>9}{'MiB/s':>8}"
            f"{'RSS before':>12}{'RSS peak':>10}{'growth':>9}"
        )
        for label, path in (
            ("valid 1-initializer model", model_path),
            ("valid header + garbage", garbage_path),
        ):
            before = memory_kib(worker, "VmRSS")
            status, text, seconds = upload(url, token, path)
            peak = memory_kib(worker, "VmHWM")
            print(
                f"{label:<28}{status:>7}{seconds:>9.1f}{size / 2**20 / seconds:>8.0f}"
                f"{before / 1024:>10.0f}Mi{peak / 1024:>8.0f}Mi{(peak - before) / 1024:>7.0f}Mi"
            )
            if status >= 300:
                print(f"  answer: {text}")
        print(
            f"peak growth as a share of the upload: {(peak - before) * 1024 / size:.1%} "
            "(anchor: the upload size)"
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
