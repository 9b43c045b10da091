"""The gateway's prediction log: what each request was answered with, shipped in batches.

Recording costs the request path one append to a bounded deque (raw bytes, nothing decoded);
a background task decodes the answers, batches them and POSTs them to the dashboard's ingest
API with the endpoint's own token. When the dashboard is away the batch is kept and retried
with backoff; past `max_pending` records the oldest are dropped and counted, so a long outage
costs log entries, never memory or latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modeldeck_runtime.codec import decode_infer_response, decode_invocation_response

logger = logging.getLogger("modeldeck.predlog")

# Answers larger than this are logged without their content (only a summary is shipped).
MAX_CONTENT_BYTES = 64 * 1024
# Sampled inputs larger than this are left out, so that a batch stays well under the
# dashboard's request size limit.
MAX_INPUT_BYTES = 4 * 1024
# Values of the first output kept per record.
MAX_OUTPUT_VALUES = 32
MAX_BACKOFF_SECONDS = 30.0


@dataclass(slots=True)
class PendingRecord:
    """One answer as recorded on the request path, before decoding."""

    request_id: str
    version: str
    role: str
    time: float
    status: int
    latency: float
    invocation: bool
    body: bytes | None
    header_length: int | None
    inputs: bytes | None


def summarize(outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """The first output's leading values and what feedback is judged against.

    Labels (integers, strings, booleans) are a class; per-class scores [N, C] are the class of
    their argmax; a single number per row is a regression value. Row 0 decides.
    """
    if not outputs:
        return {"output": None, "predicted_class": "", "predicted_value": None}
    array = np.asarray(next(iter(outputs.values())))
    flat = array.reshape(-1)[:MAX_OUTPUT_VALUES]
    if flat.dtype.kind in "SO":
        values = [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in flat]
    else:
        values = flat.tolist()
    summary: dict[str, Any] = {"output": values, "predicted_class": "", "predicted_value": None}
    if array.size == 0:
        return summary
    if array.dtype.kind == "f":
        if array.ndim >= 2 and array.shape[-1] > 1:
            row = array.reshape(-1, array.shape[-1])[0]
            summary["predicted_class"] = str(int(np.argmax(row)))
        else:
            value = float(array.reshape(-1)[0])
            summary["predicted_value"] = value if np.isfinite(value) else None
    else:
        first = array.reshape(-1)[0]
        text = first.decode(errors="replace") if isinstance(first, bytes) else str(first)
        if array.dtype.kind == "b":
            text = text.lower()
        summary["predicted_class"] = text[:100]
    return summary


def record_document(record: PendingRecord) -> dict[str, Any]:
    """The JSON form of one record for the ingest API."""
    document: dict[str, Any] = {
        "request_id": record.request_id,
        "version": record.version,
        "role": record.role,
        "time": record.time,
        "status": record.status,
        "latency": round(record.latency, 6),
    }
    if record.body is not None and record.status == 200:
        try:
            if record.invocation:
                outputs = decode_invocation_response(record.body)
            else:
                outputs = decode_infer_response(record.body, record.header_length)
            document.update(summarize(outputs))
        except (ValueError, KeyError, TypeError, IndexError):
            pass  # an answer we cannot read is still logged, without its content
    if record.inputs is not None:
        with contextlib.suppress(orjson.JSONDecodeError):
            document["inputs"] = orjson.loads(record.inputs)
    return document


class PredictionLog:
    """A bounded queue of records and the task that ships them."""

    def __init__(
        self,
        *,
        url: str,
        token: str,
        batch_size: int = 200,
        flush_seconds: float = 1.0,
        max_pending: int = 20_000,
        timeout: float = 5.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("the prediction log URL must be http:// or https://")
        self.url = url
        self.token = token
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.timeout = timeout
        self.pending: deque[PendingRecord] = deque(maxlen=max_pending)
        self.dropped = 0
        self.shipped = 0
        self.failures = 0
        # Set by the dashboard's answers, so an endpoint's setting applies without a restart.
        self.input_sample_percent = 0.0
        self.random = random.Random()
        self.task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def wants_inputs(self) -> bool:
        """Whether this request's inputs belong to the sample."""
        percent = self.input_sample_percent
        return percent > 0 and self.random.random() * 100 < percent

    def record(
        self,
        *,
        request_id: str,
        version: str,
        role: str,
        status: int,
        latency: float,
        invocation: bool,
        body: bytes | None,
        header_length: int | None = None,
        inputs: bytes | None = None,
    ) -> None:
        """Queue one answer (cheap: no decoding here)."""
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1
        if body is not None and len(body) > MAX_CONTENT_BYTES:
            body = None
        if inputs is not None and len(inputs) > MAX_INPUT_BYTES:
            inputs = None
        self.pending.append(
            PendingRecord(
                request_id=request_id,
                version=version,
                role=role,
                time=time.time(),
                status=status,
                latency=latency,
                invocation=invocation,
                body=body,
                header_length=header_length,
                inputs=inputs,
            )
        )
        if len(self.pending) >= self.batch_size:
            self.wake.set()

    def start(self) -> None:
        """Start shipping (from the app's startup)."""
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Ship what is left (one try), then stop."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        while self.pending:
            if not await self.flush():
                break

    async def _run(self) -> None:
        delay = self.flush_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=delay)
            self.wake.clear()
            shipped = True
            while self.pending and shipped:
                shipped = await self.flush()
            delay = (
                self.flush_seconds
                if shipped
                else min(MAX_BACKOFF_SECONDS, self.flush_seconds * 2 ** min(self.failures, 5))
            )

    async def flush(self) -> bool:
        """Send one batch; on failure put it back at the front (oldest first) and say so."""
        batch = [self.pending.popleft() for _ in range(min(self.batch_size, len(self.pending)))]
        if not batch:
            return True
        try:
            answer = await asyncio.to_thread(self._post, batch)
        except Exception as error:  # the dashboard being away must never hurt serving
            self.failures += 1
            logger.warning("could not ship %d prediction records: %s", len(batch), error)
            room = (self.pending.maxlen or 0) - len(self.pending)
            keep = batch[-room:] if room > 0 else []
            self.dropped += len(batch) - len(keep)
            self.pending.extendleft(reversed(keep))
            return False
        self.failures = 0
        self.shipped += len(batch)
        percent = answer.get("input_sample_percent") if isinstance(answer, dict) else None
        if isinstance(percent, int | float) and 0 <= percent <= 100:
            self.input_sample_percent = float(percent)
        return True

    def _post(self, batch: list[PendingRecord]) -> Any:
        body = orjson.dumps(
            {"records": [record_document(record) for record in batch], "dropped": self.dropped}
        )
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked in __init__)
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.token}",
            },
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return orjson.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            if 400 <= error.code < 500 and error.code not in (408, 429):
                # The dashboard refused the batch for good (bad token, bad record): retrying
                # cannot help, so it is dropped and counted.
                self.dropped += len(batch)
                logger.error("the dashboard refused %d prediction records: %s", len(batch), error)
                return {}
            raise
