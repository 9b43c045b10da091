"""The HTTP floors for bench/runtime_serving.py: the runtime's stacks doing no work at all.

A raw ASGI app that reads the whole body and answers a fixed small JSON document, served either
by the runtime's built-in HTTP server (what modeldeck-serve uses) or by uvicorn with httptools
and uvloop, so the version server's figures can be read against what the stack alone costs.
Run: python bench/runtime_floor.py PORT [builtin|uvicorn]
"""

from __future__ import annotations

import sys

import uvicorn
from modeldeck_runtime.httpserver import HttpServer

ANSWER = b'{"model_name":"floor","model_version":"1","outputs":[]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope, receive, send) -> None:
    """Read the request body, answer a constant; accept the lifespan protocol."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


if __name__ == "__main__":
    port = int(sys.argv[1])
    if (sys.argv[2] if len(sys.argv) > 2 else "builtin") == "builtin":
        raise SystemExit(
            HttpServer(app, host="127.0.0.1", port=port, max_body_bytes=32 << 20).run()
        )
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,
    )
