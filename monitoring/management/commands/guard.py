"""`manage.py guard [--once] [--interval SECONDS]`: the guardrails without the broker.

Every GUARD_INTERVAL_SECONDS it scrapes the runtime of every endpoint that may serve traffic and
judges every enabled rollback policy, in this process: a breach rolls back through
`endpoint_rollback` and converges the endpoint inline. It needs only the database and the
runtimes, so a bad version is pulled while the broker (and with it beat and the workers) is
down. Running it beside beat is safe: scrapes are fenced by fetch time and counters, and a
second evaluation finds the rollback already written.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from monitoring import scraper, services
from monitoring.models import EvaluationAction

logger = logging.getLogger("monitoring.guard")


@dataclass
class GuardRound:
    """What one round did, for the log and for tests."""

    scraped: list[str] = field(default_factory=list)
    evaluated: int = 0
    rolled_back: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def guard_round() -> GuardRound:
    """Scrape every serving endpoint, then judge every enabled policy; never raises.

    One endpoint that fails is logged and skipped by the scraper and by the evaluation; a failure
    of a whole step (the database is away) is logged here, and the next round tries again.
    """
    result = GuardRound()
    # A long-lived process: drop a connection the database closed (restart, idle timeout).
    close_old_connections()
    try:
        result.scraped = sorted(scraper.scrape_all())
    except Exception as error:
        logger.exception("guard: scraping failed")
        result.errors.append(f"scrape: {error.__class__.__name__}: {error}")
    try:
        evaluations = services.rollback_policies_evaluate_all()
    except Exception as error:
        logger.exception("guard: evaluating rollback policies failed")
        result.errors.append(f"evaluate: {error.__class__.__name__}: {error}")
        evaluations = []
    finally:
        close_old_connections()
    result.evaluated = len(evaluations)
    for evaluation in evaluations:
        if evaluation.action == EvaluationAction.ROLLED_BACK:
            result.rolled_back.append(evaluation.endpoint_id)
            logger.warning(
                "guard: evaluation %s rolled endpoint %s back (release %s): %s",
                evaluation.pk,
                evaluation.endpoint_id,
                evaluation.rollback_release_number,
                evaluation.message,
            )
    return result


class Command(BaseCommand):
    help = (
        "Scrape live endpoints and judge their rollback policies every GUARD_INTERVAL_SECONDS, "
        "without the broker, until SIGTERM or SIGINT (--once: one round)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="run one round and exit")
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="seconds between the starts of two rounds (default: GUARD_INTERVAL_SECONDS)",
        )

    def handle(self, *args, once: bool, interval: float | None, **options):
        interval = settings.GUARD_INTERVAL_SECONDS if interval is None else interval
        if interval <= 0:
            raise CommandError("the interval must be a positive number of seconds")
        stopping = threading.Event()
        previous = {}

        def stop(signum, _frame):
            # Finish the round (a rollback converging inline is not cut in half); a second
            # signal acts as it would have without us.
            logger.info("guard: %s, stopping after this round", signal.Signals(signum).name)
            stopping.set()
            signal.signal(signum, previous[signum] or signal.SIG_DFL)

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, stop)
        try:
            if not once:
                logger.info("guard: one round every %g s", interval)
            while not stopping.is_set():
                started = time.monotonic()
                result = guard_round()
                # A quiet round is not worth a line every GUARD_INTERVAL_SECONDS.
                level = logging.INFO if result.rolled_back else logging.DEBUG
                summary = (
                    f"scraped {len(result.scraped)} endpoints, {result.evaluated} evaluations, "
                    f"{len(result.rolled_back)} rollbacks"
                )
                logger.log(
                    logging.WARNING if result.errors else level,
                    "guard: %s%s",
                    summary,
                    "".join(f"; {error}" for error in result.errors),
                )
                if once:
                    self.stdout.write(summary)
                    if result.errors:
                        raise CommandError("the guard round failed: " + "; ".join(result.errors))
                    break
                stopping.wait(max(0.0, interval - (time.monotonic() - started)))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler or signal.SIG_DFL)
        if not once:
            logger.info("guard: stopped")
