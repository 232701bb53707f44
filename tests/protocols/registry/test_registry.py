"""Registry behaviour across processes; each Registry stands in for one node's process."""

from __future__ import annotations

import asyncio

import pytest

from protocols.registry import (
    ChangeKind,
    Entry,
    Load,
    NotRegisteredError,
    RegistrationTakenError,
    Status,
    open_registry,
)
from tests.protocols.registry.conftest import BackendFactory


def agent(id: str, node: str, pid: int, caps: tuple[str, ...] = ("echo",), **meta) -> Entry:
    return Entry.new(id, pool=id.split(".")[0], node=node, pid=pid, capabilities=caps, metadata=meta)


async def test_two_nodes_see_each_others_agents(backends: BackendFactory) -> None:
    async with open_registry(backend=await backends()) as node_a, open_registry(backend=await backends()) as node_b:
        await node_a.register(agent("echo.a0", "a", 11))
        await node_b.register(agent("echo.b0", "b", 22))
        # Each sees its own write at once (read-your-writes) ...
        assert node_a.lookup("echo.a0") is not None
        # ... and the other's once the watch delivers it.
        await node_a.wait_for(lambda c: "echo.b0" in c, timeout=5)
        await node_b.wait_for(lambda c: "echo.a0" in c, timeout=5)
        assert {e.id for e in node_a.find(capability="echo")} == {"echo.a0", "echo.b0"}
        assert [e.id for e in node_b.find(node="a")] == ["echo.a0"]


async def test_a_late_registry_loads_existing_entries_before_it_opens(backends: BackendFactory) -> None:
    async with open_registry(backend=await backends()) as first:
        for n in range(20):
            await first.register(agent(f"echo.{n}", "a", 100 + n))
        async with open_registry(backend=await backends()) as late:
            assert len(late) == 20
            assert late.lookup("echo.7").pid == 107


async def test_heartbeat_carries_status_and_load_to_other_caches(backends: BackendFactory) -> None:
    async with open_registry(backend=await backends()) as worker, open_registry(backend=await backends()) as reader:
        await worker.register(agent("echo.0", "a", 1))
        await worker.heartbeat("echo.0", status=Status.BUSY, load=Load(in_flight=4, processed=9))
        await reader.wait_for(lambda c: (e := c.lookup("echo.0")) is not None and e.status is Status.BUSY, timeout=5)
        seen = reader.lookup("echo.0")
        assert seen.load == Load(4, 9)
        assert reader.find(status="busy") == [seen]
        assert reader.find(status="starting") == []


async def test_unregister_removes_the_entry_everywhere(backends: BackendFactory) -> None:
    async with open_registry(backend=await backends()) as worker, open_registry(backend=await backends()) as other:
        await worker.register(agent("echo.0", "a", 1))
        await other.wait_for(lambda c: "echo.0" in c, timeout=5)
        with other.watch() as events:
            assert await worker.unregister("echo.0") is True
            event = await anext(events)
        assert (event.kind, event.id, event.entry.pid) == (ChangeKind.DELETE, "echo.0", 1)
        assert other.lookup("echo.0") is None and other.find(capability="echo") == []
        with pytest.raises(NotRegisteredError, match="did not register"):
            await worker.heartbeat("echo.0")


async def test_supervisor_unregister_spares_a_respawned_slot(backends: BackendFactory) -> None:
    async with open_registry(backend=await backends()) as supervisor, open_registry(backend=await backends()) as new:
        await new.register(agent("echo.0", "a", pid=2))  # the respawned worker got in first
        # The supervisor reports the exit of the old pid 1: the new entry must stay.
        assert await supervisor.unregister("echo.0", pid=1, node="a") is False
        assert await supervisor.unregister("echo.0", pid=2, node="b") is False
        got = await new.backend.get("echo.0")
        assert got is not None and got[0].pid == 2
        assert await supervisor.unregister("echo.0", pid=2, node="a") is True
        assert await new.backend.get("echo.0") is None


async def test_respawned_slot_replaces_its_predecessor_and_the_old_owner_cannot_heartbeat(
    backends: BackendFactory,
) -> None:
    async with open_registry(backend=await backends()) as old, open_registry(backend=await backends()) as new:
        await old.register(agent("echo.0", "a", pid=1))
        await new.register(agent("echo.0", "a", pid=2))
        with pytest.raises(RegistrationTakenError, match="held by pid 2"):
            await old.heartbeat("echo.0", load=Load(1, 1))
        await old.wait_for(lambda c: (e := c.lookup("echo.0")) is not None and e.pid == 2, timeout=5)
        got = await new.backend.get("echo.0")
        assert got is not None and got[0].pid == 2


async def test_the_same_id_from_another_node_is_refused(backends: BackendFactory) -> None:
    async with open_registry(backend=await backends()) as a, open_registry(backend=await backends()) as b:
        await a.register(agent("echo.0", "a", pid=1))
        with pytest.raises(RegistrationTakenError, match="unique across the cluster"):
            await b.register(agent("echo.0", "b", pid=1))


async def test_entries_whose_heartbeats_stop_expire_from_other_caches(backends: BackendFactory) -> None:
    # ``dying`` stands for a node that is kill -9'd: it never unregisters, its entries just stop beating.
    dying_backend = await backends()
    async with open_registry(backend=await backends(), ttl=60) as watcher:
        async with open_registry(backend=dying_backend, ttl=1) as dying:
            await dying.register(agent("echo.x0", "x", 1))
            await dying.register(agent("echo.x1", "x", 2))
            await watcher.wait_for(lambda c: len(c.find(node="x")) == 2, timeout=5)
            await watcher.register(agent("echo.w0", "w", 3))
            with watcher.watch() as events:
                await dying.close(unregister=False)
                gone = {(e.kind, e.id) async for e in _take(events, 2, timeout=10)}
        assert gone == {(ChangeKind.EXPIRE, "echo.x0"), (ChangeKind.EXPIRE, "echo.x1")}
        assert watcher.find(node="x") == [] and watcher.lookup("echo.w0") is not None


async def test_heartbeats_keep_an_entry_alive_past_its_ttl(backends: BackendFactory) -> None:
    async with open_registry(backend=await backends(), ttl=1) as worker:
        async with open_registry(backend=await backends(), ttl=1) as control:
            await worker.register(agent("echo.0", "a", 1))
            await control.register(agent("echo.c", "c", 2))  # not heartbeated: our clock
            with control.watch() as events:
                # Beat on every change seen until the unbeaten control entry has expired
                # (so more than a TTL has passed); each beat is itself the next change.
                await worker.heartbeat("echo.0")
                async for event in events:
                    if event.kind is ChangeKind.EXPIRE:
                        assert event.id == "echo.c"
                        break
                    await worker.heartbeat("echo.0")
            # The control expired; a beaten entry with the same TTL is still there.
            got = await worker.backend.get("echo.0")
            assert got is not None
            assert control.lookup("echo.0") is not None


async def test_heartbeat_after_expiry_registers_again(backends: BackendFactory) -> None:
    async with open_registry(backend=await backends(), ttl=1) as worker:
        await worker.register(agent("echo.0", "a", 1))
        await worker.wait_for(lambda c: "echo.0" not in c, timeout=10)  # paused past the TTL
        await worker.heartbeat("echo.0", status="ready")
        got = await worker.backend.get("echo.0")
        assert got is not None and got[0].status is Status.READY
        assert worker.lookup("echo.0").status is Status.READY


async def test_close_unregisters_owned_entries(backends: BackendFactory) -> None:
    async with open_registry(backend=await backends()) as other:
        async with open_registry(backend=await backends()) as worker:
            await worker.register(agent("echo.0", "a", 1))
            await other.wait_for(lambda c: "echo.0" in c, timeout=5)
        await other.wait_for(lambda c: "echo.0" not in c, timeout=5)


async def _take(events, n: int, timeout: float):
    async with asyncio.timeout(timeout):
        for _ in range(n):
            yield await anext(events)


async def test_heartbeat_forever_reports_samples_until_cancelled(backends: BackendFactory) -> None:
    worker_backend, reader_backend = await backends(), await backends()
    async with open_registry(backend=worker_backend, ttl=1) as worker, open_registry(backend=reader_backend) as reader:
        await worker.register(agent("echo.0", "a", 1))
        samples = iter([(Status.READY, Load(0, 1)), (Status.BUSY, Load(2, 3))])
        beating = asyncio.create_task(
            worker.heartbeat_forever("echo.0", lambda: next(samples, (None, None)), interval=0.01)
        )
        try:
            await reader.wait_for(lambda c: (e := c.lookup("echo.0")) is not None and e.load == Load(2, 3), timeout=5)
            assert reader.lookup("echo.0").status is Status.BUSY
        finally:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)
        await worker.unregister("echo.0")
        with pytest.raises(NotRegisteredError):
            await worker.heartbeat_forever("echo.0", interval=0.01)
