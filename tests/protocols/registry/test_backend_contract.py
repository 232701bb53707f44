"""The contract every RegistryBackend keeps; runs on memory and on the KV bucket."""

from __future__ import annotations

import asyncio

import pytest

from protocols.registry import (
    BackendWatch,
    Change,
    ChangeKind,
    Entry,
    EntryExistsError,
    RegistryBackend,
    RevisionMismatchError,
)

LONG = 60.0


def entry(id: str = "echo.0", pid: int = 100, node: str = "a") -> Entry:
    return Entry.new(id, pool=id.split(".")[0], node=node, pid=pid, capabilities=["echo"])


async def next_change(watch: BackendWatch, timeout: float = 5.0) -> Change | None:
    return await asyncio.wait_for(watch.__anext__(), timeout)


async def test_put_then_get_returns_the_entry_and_its_revision(backend: RegistryBackend) -> None:
    first = await backend.put(entry(), LONG)
    second = await backend.put(entry(pid=101), LONG)
    assert second > first
    got = await backend.get("echo.0")
    assert got is not None and got[0].pid == 101 and got[1] == second
    assert await backend.get("echo.9") is None


async def test_create_refuses_a_live_id_but_not_a_deleted_one(backend: RegistryBackend) -> None:
    await backend.create(entry(), LONG)
    with pytest.raises(EntryExistsError, match="already exists"):
        await backend.create(entry(pid=2), LONG)
    await backend.delete("echo.0")
    rev = await backend.create(entry(pid=3), LONG)
    got = await backend.get("echo.0")
    assert got is not None and (got[0].pid, got[1]) == (3, rev)


async def test_update_is_compare_and_set(backend: RegistryBackend) -> None:
    rev = await backend.put(entry(), LONG)
    newer = await backend.update(entry(pid=7), LONG, rev)
    with pytest.raises(RevisionMismatchError):
        await backend.update(entry(pid=8), LONG, rev)
    got = await backend.get("echo.0")
    assert got is not None and (got[0].pid, got[1]) == (7, newer)


async def test_update_of_a_deleted_key_fails(backend: RegistryBackend) -> None:
    rev = await backend.put(entry(), LONG)
    await backend.delete("echo.0")
    with pytest.raises(RevisionMismatchError):
        await backend.update(entry(), LONG, rev)
    assert await backend.get("echo.0") is None


async def test_delete_with_a_stale_revision_keeps_the_entry(backend: RegistryBackend) -> None:
    old = await backend.put(entry(), LONG)
    await backend.put(entry(pid=5), LONG)
    with pytest.raises(RevisionMismatchError):
        await backend.delete("echo.0", old)
    got = await backend.get("echo.0")
    assert got is not None and got[0].pid == 5


async def test_watch_replays_current_entries_then_reports_live_changes(backend: RegistryBackend) -> None:
    await backend.put(entry("echo.0"), LONG)
    await backend.put(entry("echo.1"), LONG)
    await backend.put(entry("echo.2"), LONG)
    await backend.delete("echo.2")
    watch = await backend.watch()
    try:
        replayed = []
        while (change := await next_change(watch)) is not None:
            replayed.append(change)
        live = {c.id: c for c in replayed if c.kind is ChangeKind.PUT}
        assert sorted(live) == ["echo.0", "echo.1"]

        put_rev = await backend.put(entry("echo.3", pid=33), LONG)
        change = await next_change(watch)
        assert change is not None
        assert (change.kind, change.id, change.revision, change.entry.pid) == (ChangeKind.PUT, "echo.3", put_rev, 33)

        await backend.delete("echo.0")
        change = await next_change(watch)
        assert change is not None and (change.kind, change.id, change.entry) == (ChangeKind.DELETE, "echo.0", None)
        assert change.revision > put_rev
    finally:
        await watch.stop()


async def test_watch_on_an_empty_store_is_caught_up_at_once(backend: RegistryBackend) -> None:
    watch = await backend.watch()
    try:
        assert await next_change(watch) is None
    finally:
        await watch.stop()


async def test_an_entry_that_is_not_rewritten_expires_and_watchers_are_told(backend: RegistryBackend) -> None:
    watch = await backend.watch()
    try:
        assert await next_change(watch) is None
        await backend.put(entry("echo.0"), 1.0)
        await backend.put(entry("echo.1"), LONG)
        seen = [await next_change(watch), await next_change(watch)]
        assert [c.kind for c in seen] == [ChangeKind.PUT, ChangeKind.PUT]
        expired = await next_change(watch, timeout=10.0)
        assert expired is not None and (expired.kind, expired.id) == (ChangeKind.EXPIRE, "echo.0")
        assert await backend.get("echo.0") is None
        assert await backend.get("echo.1") is not None
    finally:
        await watch.stop()


async def test_a_rewrite_restarts_the_ttl(backend: RegistryBackend) -> None:
    watch = await backend.watch()
    try:
        assert await next_change(watch) is None
        await backend.put(entry("echo.0"), 1.0)
        await backend.put(entry("echo.0"), LONG)  # the later TTL wins
        await backend.put(entry("echo.1"), 2.0)
        kinds = []
        while True:
            change = await next_change(watch, timeout=10.0)
            kinds.append((change.kind, change.id))
            if change.kind is ChangeKind.EXPIRE:
                break
        # echo.1 (2 s) expires first: echo.0's 1 s TTL was superseded by the second write.
        assert kinds[-1] == (ChangeKind.EXPIRE, "echo.1")
        assert await backend.get("echo.0") is not None
    finally:
        await watch.stop()
