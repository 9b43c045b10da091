"""Route entries with several replicas: the table's form, and how the gateway picks a replica
(least outstanding, in turn) and moves on when one refuses the connection."""

import asyncio
import socket

import pytest
from modeldeck_runtime.routing import TableError, parse_table
from modeldeck_runtime.upstream import UpstreamClient

from deployments.targets.base import Route as WorkerRoute
from deployments.targets.gateway import route_table_document
from tests.runtime.helpers import run_coroutine

A, B, C = "http://127.0.0.1:22901", "http://127.0.0.1:22902", "http://127.0.0.1:22903"


def _table(entry):
    return parse_table({"generation": 1, "routes": [{"version": "m:1", "weight": 100, **entry}]})


def test_a_route_takes_one_upstream_or_a_list_of_replicas_and_documents_itself_the_same_way():
    single = _table({"upstream": A})
    assert single.routes[0].upstreams == (A,)
    assert single.document()["routes"][0] == {
        "version": "m:1", "upstream": A, "weight": 100, "role": "primary",
    }  # fmt: skip
    several = _table({"upstreams": [A, B, C + "/"]})
    assert several.routes[0].upstream == A
    assert several.routes[0].upstreams == (A, B, C)
    assert several.document()["routes"][0]["upstreams"] == [A, B, C]
    assert parse_table(several.document()).routes == several.routes


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({}, "route of version 'm:1' must have an 'upstream' URL or an 'upstreams' list"),
        ({"upstream": A, "upstreams": [B]},
         "route of version 'm:1' must have an 'upstream' URL or an 'upstreams' list"),
        ({"upstreams": []}, "'upstreams' of version 'm:1' must be a list of 1 to 20 URLs"),
        ({"upstreams": [f"http://127.0.0.1:{22000 + n}" for n in range(21)]},
         "'upstreams' of version 'm:1' must be a list of 1 to 20 URLs"),
        ({"upstreams": [A, A]}, "'upstreams' of version 'm:1' lists a URL twice"),
        ({"upstreams": [A, "ftp://x:1"]},
         "upstream of version 'm:1' must look like http://host:port, not 'ftp://x:1'"),
    ],
)  # fmt: skip
def test_bad_replica_lists_are_refused_with_a_reason(entry, message):
    with pytest.raises(TableError) as refused:
        _table(entry)
    assert str(refused.value) == message


def test_the_worker_sends_one_replica_as_upstream_and_several_as_upstreams():
    one = WorkerRoute("m:1", 1, A, 60, "primary", upstreams=(A,))
    three = WorkerRoute("m:2", 2, A, 40, "candidate", upstreams=(A, B, C))
    document = route_table_document(routes=[one, three], generation=4, sticky=None)
    assert document["routes"] == [
        {"version": "m:1", "upstream": A, "weight": 60, "role": "primary"},
        {"version": "m:2", "upstreams": [A, B, C], "weight": 40, "role": "candidate"},
    ]
    assert parse_table(document).routes[1].upstreams == (A, B, C)


def test_replicas_are_taken_in_turn_and_a_busy_one_is_passed_over():
    client = UpstreamClient()
    firsts = [client.order((A, B, C))[0] for _ in range(6)]
    assert sorted(firsts) == [A, A, B, B, C, C]
    client.outstanding[B] = 5
    client.outstanding[C] = 1
    assert [client.order((A, B, C)) for _ in range(3)] == [[A, C, B]] * 3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_replica_that_refuses_the_connection_is_skipped_within_the_same_request():
    async def scenario():
        answered = []

        async def answer(reader, writer):
            # Keep-alive: answer every request on the connection until the client closes it.
            while await reader.readuntil(b"\r\n\r\n"):
                answered.append(1)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        live = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        gone = f"http://127.0.0.1:{_free_port()}"  # nothing listens: connection refused
        client = UpstreamClient()
        statuses = []
        for _ in range(4):
            response = await client.request_any((gone, live), "GET", b"/", [], b"", 5.0)
            statuses.append(response.status)
        with pytest.raises(OSError):
            await client.request_any((gone,), "GET", b"/", [], b"", 5.0)
        client.close()
        await asyncio.sleep(0)
        server.close()
        await server.wait_closed()
        return statuses, len(answered), client.outstanding

    statuses, answered, outstanding = run_coroutine(scenario())
    assert statuses == [200, 200, 200, 200]
    assert answered == 4
    assert set(outstanding.values()) == {0}
