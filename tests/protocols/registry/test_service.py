"""The JSON query endpoint, asked by a plain NATS client as any language would."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import nats
import pytest

from protocols.registry import (
    QUERY_SUBJECT,
    Entry,
    Load,
    Registry,
    Status,
    handle_query,
    open_registry,
    serve_registry_queries,
)


@pytest.fixture
async def registry(nc) -> AsyncIterator[Registry]:
    async with open_registry(nc) as reg:
        await reg.register(Entry.new("gpu.0", pool="gpu", node="a", pid=1, capabilities=["embed"],
                                     metadata={"gpu": {"mem": 16}}, status="ready"))
        await reg.register(Entry.new("gpu.1", pool="gpu", node="b", pid=2, capabilities=["embed"],
                                     metadata={"gpu": {"mem": 24}}, status="ready"))
        await reg.register(Entry.new("cpu.0", pool="cpu", node="a", pid=3, capabilities=["chat"],
                                     metadata={}, status="busy"))
        await reg.heartbeat("gpu.0", load=Load(in_flight=5, processed=1))
        service = await serve_registry_queries(nc, reg)
        try:
            yield reg
        finally:
            await service.stop()


@pytest.fixture
async def plain(nats_url: str) -> AsyncIterator[nats.NATS]:
    client = await nats.connect(servers=nats_url.split(","))  # no Foundation code on this side
    try:
        yield client
    finally:
        await client.close()


async def ask(client: nats.NATS, request: dict | bytes) -> dict:
    body = request if isinstance(request, bytes) else json.dumps(request).encode()
    reply = await client.request(QUERY_SUBJECT, body, timeout=5)
    return json.loads(reply.data)


async def test_lookup_find_and_ls(registry: Registry, plain: nats.NATS) -> None:
    found = await ask(plain, {"op": "lookup", "id": "gpu.1"})
    assert found["ok"] and found["count"] == 1
    assert found["entries"][0] | {"started_at": 0, "heartbeat_at": 0} == {
        "v": 1, "id": "gpu.1", "pool": "gpu", "node": "b", "pid": 2, "capabilities": ["embed"],
        "metadata": {"gpu": {"mem": 24}}, "status": "ready", "load": {"in_flight": 0, "processed": 0},
        "started_at": 0, "heartbeat_at": 0,
    }
    assert await ask(plain, {"op": "lookup", "id": "gpu.9"}) == {"v": 1, "ok": True, "count": 0, "entries": []}

    by_node = await ask(plain, {"op": "find", "capability": "embed", "node": "a"})
    assert [e["id"] for e in by_node["entries"]] == ["gpu.0"]
    everything = await ask(plain, {"op": "ls"})
    assert [e["id"] for e in everything["entries"]] == ["cpu.0", "gpu.0", "gpu.1"]
    limited = await ask(plain, {"op": "ls", "limit": 2})
    assert [e["id"] for e in limited["entries"]] == ["cpu.0", "gpu.0"]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ([["metadata.gpu.mem", "eq", 16]], ["gpu.0"]),
        ([["metadata.gpu.mem", "neq", 16]], ["gpu.1"]),
        ([["metadata.gpu.mem", "gt", 16]], ["gpu.1"]),
        ([["metadata.gpu.mem", "lt", 24]], ["gpu.0"]),
        ([["metadata.gpu.mem", "gte", 16]], ["gpu.0", "gpu.1"]),
        ([["metadata.gpu.mem", "lte", 16]], ["gpu.0"]),
        ([["status", "in", ["busy", "draining"]]], ["cpu.0"]),
        ([["pool", "not_in", ["gpu"]]], ["cpu.0"]),
        ([["load.in_flight", "gt", 0], ["node", "eq", "a"]], ["gpu.0"]),
    ],
)
async def test_query_operators_over_json(registry: Registry, plain: nats.NATS, where: list, expected: list) -> None:
    reply = await ask(plain, {"op": "query", "where": where})
    assert reply["ok"], reply
    assert [e["id"] for e in reply["entries"]] == expected


async def test_least_loaded_over_json(registry: Registry, plain: nats.NATS) -> None:
    reply = await ask(plain, {"op": "least_loaded", "capability": "embed", "n": 2})
    assert [e["id"] for e in reply["entries"]] == ["gpu.1", "gpu.0"]


@pytest.mark.parametrize(
    ("request_body", "error"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        ({"op": "drop"}, "unknown registry request op 'drop'"),
        ({"op": "lookup"}, "needs a string 'id'"),
        ({"op": "query", "where": [["metadata.x", "like", 1]]}, "unknown query operator 'like'"),
        ({"op": "query"}, "needs 'where'"),
        ({"op": "find", "node": 3}, "'node' must be a string"),
        ({"op": "ls", "limit": -1}, "non-negative integer"),
    ],
)
async def test_bad_requests_get_an_error_reply(registry: Registry, plain: nats.NATS, request_body, error: str) -> None:
    reply = await ask(plain, request_body)
    assert reply["ok"] is False and error in reply["error"]


async def test_endpoint_is_listed_on_the_foundation_service(registry: Registry, plain: nats.NATS) -> None:
    info = json.loads((await plain.request("$SRV.INFO.foundation", b"", timeout=5)).data)
    assert info["name"] == "foundation"
    assert [(e["name"], e["subject"]) for e in info["endpoints"]] == [("registry", QUERY_SUBJECT)]


async def test_handle_query_answers_status_filters_without_nats(registry: Registry) -> None:
    reply = json.loads(await handle_query(registry, b'{"op": "find", "status": "busy"}'))
    assert [(e["id"], e["status"]) for e in reply["entries"]] == [("cpu.0", Status.BUSY.value)]
