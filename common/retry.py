"""Retrying a whole transaction that PostgreSQL chose as a deadlock victim.

Two transactions that lock the same rows in different orders deadlock; PostgreSQL aborts one of
them (SQLSTATE 40P01) and the other goes on. The aborted one did nothing (its transaction was
rolled back), so running it again is safe, and after the other one finishes it goes through.
Edge heartbeats and fleet rollouts lock device rows and the fleet's endpoint from different
starting points, so they are the services that use this.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import OperationalError, connection

logger = logging.getLogger("modeldeck.retry")

DEADLOCK = "40P01"
ATTEMPTS = 3

P = ParamSpec("P")
R = TypeVar("R")


def is_deadlock(error: BaseException) -> bool:
    """Whether a database error is PostgreSQL aborting a deadlock victim."""
    cause = error.__cause__
    return getattr(cause, "sqlstate", None) == DEADLOCK


def retry_on_deadlock(function: Callable[P, R]) -> Callable[P, R]:
    """Run a function that opens its own transaction again (up to ATTEMPTS times in all) when
    it was a deadlock's victim. Inside an outer transaction nothing is retried: that
    transaction is broken and only its owner can roll it back."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return function(*args, **kwargs)
            except OperationalError as error:
                if not is_deadlock(error) or attempt == ATTEMPTS or connection.in_atomic_block:
                    raise
                logger.warning(
                    "%s was a deadlock's victim; running it again (attempt %d of %d)",
                    function.__qualname__,
                    attempt + 1,
                    ATTEMPTS,
                )
                time.sleep(random.uniform(0.01, 0.05) * attempt)
        raise AssertionError("unreachable")

    return wrapper
