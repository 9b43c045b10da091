"""The serving settings every target kind passes to its version servers: worker processes
sharing the server's port and dynamic batching (modeldeck-serve's `--workers` and `--batch-*`
flags, runtime/README.md; bench/RESULTS.md measures what they are worth).

Each driver checks them in its own config style, as it checks `threads`, against these bounds;
the flags they become are built here once.
"""

from __future__ import annotations

# (lowest, highest) whole number each setting takes.
SERVING_LIMITS = {
    "workers": (1, 16),
    "batch_max_rows": (0, 10000),
    "batch_max_delay_us": (0, 1_000_000),
}
SERVING_KEYS = tuple(SERVING_LIMITS)


def serving_arguments(
    workers: int, batch_max_rows: int, batch_max_delay_us: int | None
) -> list[str]:
    """The modeldeck-serve flags of checked serving settings. A setting at its default (one
    worker, no batching) adds nothing, so a target without them starts its servers exactly as
    before they existed; the delay only counts with batching."""
    arguments: list[str] = []
    if workers != 1:
        arguments += ["--workers", str(int(workers))]
    if batch_max_rows:
        arguments += ["--batch-max-rows", str(int(batch_max_rows))]
        if batch_max_delay_us is not None:
            arguments += ["--batch-max-delay-us", str(int(batch_max_delay_us))]
    return arguments
