"""The in-process registry backend: the KV bucket's twin for unit tests.

It keeps the bucket's semantics that the registry relies on: one store-wide
revision counter, per-key TTL (timers on the running event loop), CAS on
revisions, and watches that replay the current entries before live changes.
Several :class:`~protocols.registry.registry.Registry` instances sharing one
``MemoryBackend`` behave like processes sharing one bucket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from protocols.registry.backend import Change, ChangeKind
from protocols.registry.entry import Entry
from protocols.registry.errors import EntryExistsError, RevisionMismatchError

_STOP = object()


class _MemoryWatch:
    def __init__(self, owner: MemoryBackend) -> None:
        self._owner = owner
        self._queue: asyncio.Queue[Change | None | object] = asyncio.Queue()
        self._stopped = False

    def __aiter__(self) -> AsyncIterator[Change | None]:
        return self

    async def __anext__(self) -> Change | None:
        item = await self._queue.get()
        if item is _STOP:
            raise StopAsyncIteration
        return item  # type: ignore[return-value]

    async def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._owner._watches.discard(self)
            self._queue.put_nowait(_STOP)


class MemoryBackend:
    """An in-memory :class:`~protocols.registry.backend.RegistryBackend`."""

    def __init__(self) -> None:
        self._live: dict[str, tuple[Entry, int, asyncio.TimerHandle]] = {}
        self._revision = 0
        self._watches: set[_MemoryWatch] = set()

    def _write(self, entry: Entry, ttl: float) -> int:
        self._revision += 1
        rev = self._revision
        old = self._live.get(entry.id)
        if old is not None:
            old[2].cancel()
        timer = asyncio.get_running_loop().call_later(ttl, self._expire, entry.id, rev)
        self._live[entry.id] = (entry, rev, timer)
        self._emit(Change(ChangeKind.PUT, entry.id, entry, rev))
        return rev

    def _remove(self, id: str, kind: ChangeKind) -> int:
        entry, _, timer = self._live.pop(id)
        timer.cancel()
        self._revision += 1
        self._emit(Change(kind, id, None, self._revision))
        return self._revision

    def _expire(self, id: str, revision: int) -> None:
        live = self._live.get(id)
        # A later write re-armed its own timer; only the latest one may expire the key.
        if live is not None and live[1] == revision:
            self._remove(id, ChangeKind.EXPIRE)

    def _emit(self, change: Change) -> None:
        for watch in self._watches:
            watch._queue.put_nowait(change)

    async def put(self, entry: Entry, ttl: float) -> int:
        return self._write(entry, ttl)

    async def create(self, entry: Entry, ttl: float) -> int:
        if entry.id in self._live:
            raise EntryExistsError(f"registry entry {entry.id!r} already exists; unregister it first")
        return self._write(entry, ttl)

    async def update(self, entry: Entry, ttl: float, revision: int) -> int:
        live = self._live.get(entry.id)
        if live is None or live[1] != revision:
            found = None if live is None else live[1]
            raise RevisionMismatchError(f"registry entry {entry.id!r} is at revision {found}, not {revision}")
        return self._write(entry, ttl)

    async def get(self, id: str) -> tuple[Entry, int] | None:
        live = self._live.get(id)
        return None if live is None else (live[0], live[1])

    async def delete(self, id: str, revision: int | None = None) -> int | None:
        live = self._live.get(id)
        if revision is not None and (live is None or live[1] != revision):
            found = None if live is None else live[1]
            raise RevisionMismatchError(f"registry entry {id!r} is at revision {found}, not {revision}")
        return None if live is None else self._remove(id, ChangeKind.DELETE)

    async def watch(self) -> _MemoryWatch:
        watch = _MemoryWatch(self)
        for id, (entry, rev, _) in self._live.items():
            watch._queue.put_nowait(Change(ChangeKind.PUT, id, entry, rev))
        watch._queue.put_nowait(None)
        self._watches.add(watch)
        return watch

    async def close(self) -> None:
        """Cancel the expiry timers and end every watch."""
        for _, _, timer in self._live.values():
            timer.cancel()
        for watch in list(self._watches):
            await watch.stop()
