"""The agent registry across real nodes: two ``foundation up`` processes on one NATS."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import nats
import pytest

from protocols.registry import (
    QUERY_SUBJECT,
    ChangeKind,
    Entry,
    Event,
    Registry,
    Status,
    open_registry,
)
from tests.supervisor.cluster import cli, start_node, stop_all
from tests.supervisor.helpers import all_gone, worker_pids

pytestmark = pytest.mark.timeout(120)

LONG_TTL = 60  # removals within a test are then the supervisor's or the worker's, never the TTL's


def pool(**extra: object) -> dict[str, object]:
    return {"handler": "tests.handlers:slow", "size": 2, "concurrency": 2, **extra}


def ids(registry: Registry, node: str | None = None) -> set[str]:
    return {e.id for e in registry.find(node=node)}


async def until(registry: Registry, check, what: str, timeout: float = 15.0) -> None:
    try:
        await registry.wait_for(lambda _cache: check(), timeout)
    except TimeoutError:
        raise AssertionError(f"{what} not reached in {timeout}s; registry: {sorted(ids(registry))}") from None


async def removals(events, wanted: set[str], timeout: float = 15.0) -> dict[str, Event]:
    """The next delete or expiry of each id in ``wanted`` (heartbeats are skipped)."""
    async def collect() -> dict[str, Event]:
        found: dict[str, Event] = {}
        async for event in events:
            if event.id in wanted and event.kind != ChangeKind.PUT:
                found.setdefault(event.id, event)
                if len(found) == len(wanted):
                    return found
        return found

    return await asyncio.wait_for(collect(), timeout)


async def test_two_nodes_see_each_others_agents_and_exits_leave_at_once(tmp_path: Path, nats_url: str, nc) -> None:
    a = await start_node(tmp_path, "a", nats_url, {
        "p": pool(capabilities=["echo", "gpu"]), "t": pool(size=1, restart="temporary"),
    }, registry_ttl=LONG_TTL)
    b = await start_node(tmp_path, "b", nats_url, {"p": pool(capabilities=["echo"])}, registry_ttl=LONG_TTL)
    try:
        async with open_registry(nc) as registry:
            # Workers register before they report ready, so a node that is up is listed in full
            # (waited for only because the cache fills through a watch).
            await until(registry, lambda: ids(registry) == {"a.p.0", "a.p.1", "a.t.0", "b.p.0", "b.p.1"},
                        "every agent of both nodes listed")
            pids = {"a": await worker_pids(nc, "p", node="a"), "b": await worker_pids(nc, "p", node="b")}
            for node, slots in pids.items():
                for slot, pid in slots.items():
                    e = registry.lookup(f"{node}.{slot}")
                    assert e is not None
                    assert (e.pool, e.node, e.pid, e.status, e.metadata) == ("p", node, pid, Status.READY, {"slot": slot})
                    assert e.capabilities == ({"echo", "gpu"} if node == "a" else {"echo"})
            assert {e.id for e in registry.find(capability="gpu")} == {"a.p.0", "a.p.1"}

            # kill -9 of a worker: the restarted slot's entry (new pid) takes its place.
            old = pids["a"]["p.0"]
            os.kill(old, signal.SIGKILL)
            await until(registry, lambda: (e := registry.lookup("a.p.0")) is not None and e.pid != old,
                        "a.p.0 registered by its replacement")
            replaced = registry.lookup("a.p.0")
            assert replaced is not None and replaced.pid == (await worker_pids(nc, "p", node="a"))["p.0"]

            # A temporary worker is not restarted: the supervisor removes its entry at once
            # (a delete, not an expiry: the TTL is a minute).
            temp = (await worker_pids(nc, "t", node="a"))["t.0"]
            with registry.watch() as events:
                os.kill(temp, signal.SIGKILL)
                event = (await removals(events, {"a.t.0"}))["a.t.0"]
            assert (event.kind, event.entry.pid) == (ChangeKind.DELETE, temp)
            assert ids(registry) == {"a.p.0", "a.p.1", "b.p.0", "b.p.1"}

            # The CLI reads the same entries through a node's endpoint.
            ls = await cli("registry", "ls", "--url", nats_url)
            assert ls.returncode == 0, ls.stderr
            rows = [line.split() for line in ls.stdout.splitlines()[1:-1]]
            assert [row[0] for row in rows] == ["a.p.0", "a.p.1", "b.p.0", "b.p.1"] and ls.stdout.endswith("4 agent(s)\n")
            assert rows[0] == ["a.p.0", "p", "a", str(replaced.pid), "ready", "0", "0", "echo,gpu"]
            gpu = await cli("registry", "ls", "--capability", "gpu", "--url", nats_url)
            assert [line.split()[0] for line in gpu.stdout.splitlines()[1:-1]] == ["a.p.0", "a.p.1"]
            on_b = await cli("registry", "ls", "--node", "b", "--json", "--url", nats_url)
            assert [e["id"] for e in json.loads(on_b.stdout)["entries"]] == ["b.p.0", "b.p.1"]

            # A clean stop unregisters every agent (long before any TTL).
            assert await stop_all(a, b) == [0, 0]
            await until(registry, lambda: not ids(registry), "an empty registry after both nodes stopped")
    finally:
        a.kill()
        b.kill()


async def test_json_endpoint_from_a_plain_nats_client(tmp_path: Path, nats_url: str) -> None:
    node = await start_node(tmp_path, "a", nats_url, {"p": pool(capabilities=["echo"]), "q": pool(size=1)})
    plain = await nats.connect(nats_url)  # no Foundation code on this side

    async def ask(request: dict) -> dict:
        return json.loads((await plain.request(QUERY_SUBJECT, json.dumps(request).encode(), timeout=5)).data)

    try:
        found = await ask({"op": "find", "capability": "echo"})
        assert (found["ok"], found["count"], [e["id"] for e in found["entries"]]) == (True, 2, ["a.p.0", "a.p.1"])
        assert all(Entry.from_dict(e).node == "a" for e in found["entries"])
        query = await ask({"op": "query", "where": [["metadata.slot", "in", ["p.1", "q.0"]], ["status", "eq", "ready"]]})
        assert [e["id"] for e in query["entries"]] == ["a.p.1", "a.q.0"]
        lookup = await ask({"op": "lookup", "id": "a.q.0"})
        assert lookup["entries"][0]["pid"] == (await worker_pids(plain, "q", node="a"))["q.0"]
        least = await ask({"op": "least_loaded", "capability": "echo", "n": 1})
        assert least["count"] == 1 and least["entries"][0]["id"] in {"a.p.0", "a.p.1"}
        bad = await ask({"op": "query", "where": [["pid", "like", 1]]})
        assert bad["ok"] is False and "like" in bad["error"]
        info = json.loads((await plain.request("$SRV.INFO.foundation", b"", timeout=5)).data)
        assert {"name": "registry", "subject": QUERY_SUBJECT}.items() <= next(
            e for e in info["endpoints"] if e["name"] == "registry").items()
    finally:
        await plain.close()
        assert node.stop() == 0


async def test_a_killed_node_s_entries_expire_after_the_ttl(tmp_path: Path, nats_url: str, nc) -> None:
    ttl = 2
    a = await start_node(tmp_path, "a", nats_url, {"p": pool()}, registry_ttl=ttl)
    b = await start_node(tmp_path, "b", nats_url, {"p": pool()}, registry_ttl=ttl)
    try:
        async with open_registry(nc) as registry:
            await until(registry, lambda: ids(registry) == {"a.p.0", "a.p.1", "b.p.0", "b.p.1"}, "both nodes listed")
            b_workers = list((await worker_pids(nc, "p", node="b")).values())
            a_started = {e.id: e.heartbeat_at for e in registry.find(node="a")}
            with registry.watch() as events:
                b.kill()  # kill -9 of the supervisor: its workers die with it, nobody unregisters them
                gone = await removals(events, {"b.p.0", "b.p.1"})
            assert {id: e.kind for id, e in gone.items()} == {"b.p.0": ChangeKind.EXPIRE, "b.p.1": ChangeKind.EXPIRE}
            assert all_gone(b_workers) == []
            # Node a's agents heartbeat on: still listed, and fresher than when b died.
            assert ids(registry) == {"a.p.0", "a.p.1"}
            assert all(registry.lookup(id).heartbeat_at > at for id, at in a_started.items())
            ls = await cli("registry", "ls", "--url", nats_url)
            assert ls.returncode == 0, ls.stderr
            assert [line.split()[0] for line in ls.stdout.splitlines()[1:]] == ["a.p.0", "a.p.1", "2"]
    finally:
        b.kill()
        assert a.stop() == 0
