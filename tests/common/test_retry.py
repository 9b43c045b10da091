"""A transaction PostgreSQL aborts as a deadlock's victim runs again and goes through."""

from __future__ import annotations

import threading

import pytest
from django.db import OperationalError, connection, transaction

from accounts.models import Team
from common.retry import is_deadlock, retry_on_deadlock


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_victim_of_a_real_deadlock_runs_again_and_both_transactions_commit():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL): SQLite serialises writers anyway")
    first, second = Team.objects.create(name="first"), Team.objects.create(name="second")
    holds_first, holds_second = threading.Event(), threading.Event()
    attempts: list[int] = []
    errors: list[BaseException] = []

    @retry_on_deadlock
    @transaction.atomic
    def victim() -> str:
        attempts.append(len(attempts) + 1)
        Team.objects.select_for_update().get(pk=first.pk)
        if len(attempts) == 1:
            holds_first.set()
            holds_second.wait(10)
        # Waits first, so its deadlock check (after deadlock_timeout) finds the cycle: it is
        # the one PostgreSQL aborts.
        Team.objects.select_for_update().get(pk=second.pk)
        Team.objects.filter(pk=first.pk).update(name="first-by-victim")
        return "done"

    def other() -> None:
        with transaction.atomic():
            Team.objects.select_for_update().get(pk=second.pk)
            holds_second.set()
            holds_first.wait(10)
            threading.Event().wait(0.3)  # the victim is waiting for this row by now
            Team.objects.select_for_update().get(pk=first.pk)
            Team.objects.filter(pk=second.pk).update(name="second-by-other")

    def run(work, results: list) -> None:
        try:
            results.append(work())
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    answers: list = []
    threads = [
        threading.Thread(target=run, args=(victim, answers)),
        threading.Thread(target=run, args=(other, [])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert answers == ["done"]
    assert attempts == [1, 2]
    assert set(Team.objects.values_list("name", flat=True)) >= {
        "first-by-victim",
        "second-by-other",
    }


def test_only_deadlocks_count_as_deadlocks():
    class Cause(Exception):
        sqlstate = "40P01"

    deadlock = OperationalError("deadlock detected")
    deadlock.__cause__ = Cause()
    other = OperationalError("server closed the connection")
    other.__cause__ = Exception()
    assert is_deadlock(deadlock)
    assert not is_deadlock(other)
