"""Concurrent writers on PostgreSQL: dense version numbers and a consistent alias history.

Each thread uses its own database connection; `transaction=True` lets their commits be seen.
"""

import itertools
import threading

import pytest
from django.db import connection

from accounts.actor import Actor
from registry import services
from registry.models import Alias, AliasEvent, ModelVersion
from tests.registry import onnx_files
from tests.registry.conftest import register

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL); SQLite serialises writers anyway")


def run_together(count: int, work) -> list:
    """Start `count` threads at the same moment; return what each returned or raised."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def runner(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except Exception as error:  # collected and asserted on by the test
            results[index] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=runner, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_twenty_parallel_uploads_get_numbers_one_to_twenty(registered, scientist_actor, onnx_path):
    path = onnx_path(onnx_files.linear_regressor())
    results = run_together(20, lambda _index: register(scientist_actor, registered, path).number)
    assert all(isinstance(result, int) for result in results), results
    assert sorted(results) == list(range(1, 21))
    assert sorted(ModelVersion.objects.values_list("number", flat=True)) == list(range(1, 21))
    registered.refresh_from_db()
    assert registered.last_version_number == 20


def test_concurrent_alias_moves_leave_a_consistent_history(registered, scientist_actor, onnx_path):
    path = onnx_path(onnx_files.linear_regressor())
    system = Actor.system("tests")
    for _ in range(4):
        version = register(scientist_actor, registered, path)
        services.version_mark_validating(actor=system, version_id=version.pk)
        services.version_record_validation(actor=system, version_id=version.pk, ok=True)
    services.alias_set(actor=scientist_actor, model=registered, name="candidate", version_number=1)
    targets = [2, 3, 4, 2, 3, 4]
    results = run_together(
        len(targets),
        lambda index: (
            services.alias_set(
                actor=scientist_actor,
                model=registered,
                name="candidate",
                version_number=targets[index],
                reason=f"move {index}",
            ).version.number
        ),
    )
    assert all(isinstance(result, int) for result in results), results
    events = list(AliasEvent.objects.filter(alias_name="candidate").order_by("id"))
    # Every move starts where the previous one ended: no lost update, no forked history.
    chain = [(e.from_version and e.from_version.number, e.to_version.number) for e in events]
    for previous, current in itertools.pairwise(chain):
        assert current[0] == previous[1], chain
    assert chain[0] == (None, 1)
    assert Alias.objects.get(name="candidate").version.number == chain[-1][1]
