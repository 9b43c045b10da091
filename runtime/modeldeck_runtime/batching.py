"""Opt-in dynamic batching: concurrent requests of one version share one onnxruntime call.

Like Triton's dynamic batcher: a request waits at most `max_delay` seconds for others; when the
rows waiting reach `max_rows` the batch runs at once. With a delay of 0 a request waits for no
one: the batch holds the requests that arrived in the same turn of the event loop (one read of
every ready connection), which costs no latency and still merges concurrent callers.

Requests are merged only when their inputs agree in everything but the number of rows; each gets
its own rows of every output back. If a merged run fails (one request's values may be what
onnxruntime refuses), each request of the batch runs alone, so one caller's bad input never fails
another's request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Feeds = dict[str, np.ndarray]
Outputs = dict[str, Any]
# run(feeds) -> (outputs by name, seconds in onnxruntime)
Runner = Callable[[Feeds], Awaitable[tuple[Outputs, float]]]
# record(feeds, outputs, rows of each request, seconds); must not raise
Recorder = Callable[[Feeds, Outputs, list[int], float], None]
# done(outputs, None) or done(None, error): called once per request, on the event loop
Done = Callable[[Outputs | None, Exception | None], None]

logger = logging.getLogger("modeldeck.batching")


@dataclass(slots=True)
class _Waiting:
    feeds: Feeds
    rows: int
    done: Done


@dataclass(slots=True)
class _Queue:
    waiting: list[_Waiting] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.Handle | None = None


class Batcher:
    """Collects requests per input layout and runs each batch once."""

    def __init__(self, run: Runner, record: Recorder, max_rows: int, max_delay: float) -> None:
        self.run = run
        self.record = record
        self.max_rows = max_rows
        self.max_delay = max_delay
        self.queues: dict[tuple[Any, ...], _Queue] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def submit(self, feeds: Feeds, rows: int, done: Done) -> None:
        """Queue one request; done gets its outputs, computed in a batch with whatever arrives
        meanwhile, or the error of its run."""
        loop = asyncio.get_running_loop()
        layout = tuple(
            (name, array.dtype.str, array.shape[1:]) for name, array in sorted(feeds.items())
        )
        queue = self.queues.get(layout)
        if queue is None:
            queue = self.queues[layout] = _Queue()
        queue.waiting.append(_Waiting(feeds, rows, done))
        queue.rows += rows
        if queue.rows >= self.max_rows:
            self._start(layout)
        elif queue.timer is None:
            queue.timer = (
                loop.call_later(self.max_delay, self._start, layout)
                if self.max_delay > 0
                else loop.call_soon(self._start, layout)
            )

    def _start(self, layout: tuple[Any, ...]) -> None:
        queue = self.queues.pop(layout, None)
        if queue is None:
            return
        if queue.timer is not None:
            queue.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._run_batch(queue.waiting))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run_batch(self, waiting: list[_Waiting]) -> None:
        if len(waiting) == 1:
            await self._run_alone(waiting[0])
            return
        names = list(waiting[0].feeds)
        merged = {name: np.concatenate([item.feeds[name] for item in waiting]) for name in names}
        row_counts = [item.rows for item in waiting]
        try:
            outputs, seconds = await self.run(merged)
            parts = _split(outputs, row_counts)
        except Exception:
            parts = None
        if parts is None:
            for item in waiting:
                await self._run_alone(item)
            return
        self.record(merged, outputs, row_counts, seconds)
        for item, part in zip(waiting, parts, strict=True):
            _deliver(item, part, None)

    async def _run_alone(self, item: _Waiting) -> None:
        try:
            outputs, seconds = await self.run(item.feeds)
        except Exception as error:
            _deliver(item, None, error)
            return
        self.record(item.feeds, outputs, [item.rows], seconds)
        _deliver(item, outputs, None)


def _deliver(item: _Waiting, outputs: Outputs | None, error: Exception | None) -> None:
    # One caller's failing callback must not keep the others of its batch from their answers.
    try:
        item.done(outputs, error)
    except Exception:
        logger.exception("could not deliver a batched answer")


def _split(outputs: Outputs, row_counts: list[int]) -> list[Outputs] | None:
    """Each request's rows of every output, or None when an output has no row per input row."""
    total = sum(row_counts)
    for value in outputs.values():
        if isinstance(value, np.ndarray):
            if value.ndim == 0 or value.shape[0] != total:
                return None
        elif not isinstance(value, list) or len(value) != total:
            return None
    parts = []
    start = 0
    for count in row_counts:
        end = start + count
        parts.append({name: value[start:end] for name, value in outputs.items()})
        start = end
    return parts
