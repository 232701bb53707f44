"""The local, indexed copy of the registry that every process reads from.

The cache is fed by one backend watch (see :class:`~protocols.registry.registry.Registry`)
and answers every read from memory: ``lookup`` is one dict access, ``find``
intersects index sets, ``query`` narrows by index then filters. Its own
process's writes are applied at once too (read-your-writes); the copy of the
same write arriving later through the watch is dropped by revision.

Invariant: for every id in ``_entries``, the id is in exactly the index sets
named by that entry's pool, node, status and capabilities, and in no other.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from protocols.registry.backend import Change, ChangeKind
from protocols.registry.entry import ACCEPTING, Entry, Status
from protocols.registry.errors import RegistryClosedError
from protocols.registry.query import INDEXED, Condition, compile_query

_EMPTY: frozenset[str] = frozenset()
# Revisions of removed ids kept to drop stale replays of them; the oldest are
# forgotten past this many, so ids that come and go cannot grow the cache.
MAX_REMOVED = 10_000


@dataclass(frozen=True, slots=True)
class Event:
    """A change as the cache applied it.

    Attributes:
        kind: put, delete or expire.
        id: the slot id.
        entry: the entry after a put, or the entry that went away.
        previous: the entry it replaced (for a put over an existing one).
    """

    kind: ChangeKind
    id: str
    entry: Entry | None
    previous: Entry | None


class ChangeStream:
    """Events applied to a cache, from the moment it was opened.

    Use ``async with cache.watch() as events: async for event in events``;
    it is subscribed as soon as it is created, so nothing between creating it
    and the first ``await`` is missed.
    """

    def __init__(self, cache: RegistryCache) -> None:
        self._cache = cache
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        cache._streams.add(self)

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> Event:
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        """Stop receiving events; a pending iteration ends."""
        if self in self._cache._streams:
            self._cache._streams.discard(self)
            self._queue.put_nowait(None)

    def __enter__(self) -> ChangeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ChangeStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class RegistryCache:
    """Entries by id, with indexes by capability, pool, node and status."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        # Latest revision applied per live id, and per removed id (bounded,
        # oldest first), so a stale put replayed by the watch cannot resurrect
        # an entry.
        self._revisions: dict[str, int] = {}
        self._removed: OrderedDict[str, int] = OrderedDict()
        self._by_capability: dict[str, set[str]] = {}
        self._by_pool: dict[str, set[str]] = {}
        self._by_node: dict[str, set[str]] = {}
        self._by_status: dict[str, set[str]] = {}
        self._streams: set[ChangeStream] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, id: str) -> bool:
        return id in self._entries

    # -- applying changes -------------------------------------------------

    def apply(self, change: Change) -> Event | None:
        """Apply one backend change; returns the event, or None if it was stale."""
        known = self._revisions.get(change.id) or self._removed.get(change.id, 0)
        if change.revision <= known:
            return None
        previous = self._entries.pop(change.id, None)
        if previous is not None:
            self._unindex(previous)
        if change.kind is ChangeKind.PUT and change.entry is not None and change.entry.id == change.id:
            self._removed.pop(change.id, None)
            self._revisions[change.id] = change.revision
            self._entries[change.id] = change.entry
            self._index(change.entry)
            event = Event(change.kind, change.id, change.entry, previous)
        else:
            self._forget(change.id, change.revision)
            if previous is None:
                return None  # a removal of something we never had: nothing changed
            event = Event(ChangeKind.DELETE if change.kind is ChangeKind.PUT else change.kind, change.id,
                          previous, None)
        self._publish(event)
        return event

    def retain(self, ids: set[str]) -> list[Event]:
        """Drop, as expired, every entry whose id is not in ``ids`` (after a watch restart)."""
        events = []
        for id in [id for id in self._entries if id not in ids]:
            entry = self._entries.pop(id)
            self._unindex(entry)
            self._forget(id, self._revisions.get(id, 0))
            event = Event(ChangeKind.EXPIRE, id, entry, None)
            self._publish(event)
            events.append(event)
        return events

    def _forget(self, id: str, revision: int) -> None:
        self._revisions.pop(id, None)
        self._removed[id] = revision
        self._removed.move_to_end(id)
        while len(self._removed) > MAX_REMOVED:
            self._removed.popitem(last=False)

    def _publish(self, event: Event) -> None:
        for stream in self._streams:
            stream._queue.put_nowait(event)

    def _index(self, entry: Entry) -> None:
        id = entry.id
        self._by_pool.setdefault(entry.pool, set()).add(id)
        self._by_node.setdefault(entry.node, set()).add(id)
        self._by_status.setdefault(entry.status.value, set()).add(id)
        for cap in entry.capabilities:
            self._by_capability.setdefault(cap, set()).add(id)

    def _unindex(self, entry: Entry) -> None:
        id = entry.id
        _discard(self._by_pool, entry.pool, id)
        _discard(self._by_node, entry.node, id)
        _discard(self._by_status, entry.status.value, id)
        for cap in entry.capabilities:
            _discard(self._by_capability, cap, id)

    # -- reads --------------------------------------------------------------

    def lookup(self, id: str) -> Entry | None:
        """The entry with this slot id, or None."""
        return self._entries.get(id)

    def entries(self) -> list[Entry]:
        """Every entry, in no particular order."""
        return list(self._entries.values())

    def _ids(
        self,
        *,
        capability: str | None = None,
        pool: str | None = None,
        node: str | None = None,
        status: Status | str | None = None,
    ) -> Iterable[str]:
        """Ids matching every given criterion (all ids if none is given)."""
        sets = []
        if capability is not None:
            sets.append(self._by_capability.get(capability, _EMPTY))
        if pool is not None:
            sets.append(self._by_pool.get(pool, _EMPTY))
        if node is not None:
            sets.append(self._by_node.get(node, _EMPTY))
        if status is not None:
            sets.append(self._by_status.get(str(status), _EMPTY))
        if not sets:
            return self._entries.keys()
        if len(sets) == 1:
            return sets[0]
        # Start from the smallest set: C-level intersection walks the smaller side of
        # each pair, so the cost follows the rarest criterion.
        sets.sort(key=len)
        return sets[0].intersection(*sets[1:])

    def find(
        self,
        *,
        capability: str | None = None,
        pool: str | None = None,
        node: str | None = None,
        status: Status | str | None = None,
    ) -> list[Entry]:
        """Entries matching every given criterion, in no particular order."""
        entries = self._entries
        return [entries[id] for id in self._ids(capability=capability, pool=pool, node=node, status=status)]

    def query(
        self,
        conditions: Iterable[Sequence[Any] | Condition],
        *,
        capability: str | None = None,
        pool: str | None = None,
        node: str | None = None,
        status: Status | str | None = None,
    ) -> list[Entry]:
        """Entries matching ``find``'s criteria and every condition.

        Raises:
            InvalidQueryError: a condition is malformed (see :mod:`protocols.registry.query`).
        """
        compiled = compile_query(conditions)
        # An ``eq`` on an indexed field becomes an index criterion instead of a scan.
        narrow: dict[str, Any] = {"pool": pool, "node": node, "status": status}
        rest: list[Condition] = []
        for cond in compiled:
            if cond.op == "eq" and cond.path in INDEXED and narrow[cond.path] is None and isinstance(cond.value, str):
                narrow[cond.path] = cond.value
            else:
                rest.append(cond)
        entries = self._entries
        found = [entries[id] for id in self._ids(capability=capability, **narrow)]
        # One pass per condition: later conditions only see what earlier ones kept.
        for cond in rest:
            found = [e for e in found if cond(e)]
        return found

    def least_loaded(self, capability: str, n: int = 1) -> list[Entry]:
        """Up to ``n`` ready or busy entries with the capability, fewest in-flight first.

        Ties go to fewer processed tasks, then to the smaller id, so the answer is
        the same in every process that holds the same entries.
        """
        entries = self._entries
        candidates = (entries[id] for id in self._by_capability.get(capability, _EMPTY))
        accepting = (e for e in candidates if e.status in ACCEPTING)
        return heapq.nsmallest(n, accepting, key=lambda e: (e.load.in_flight, e.load.processed, e.id))

    # -- waiting ----------------------------------------------------------

    def watch(self) -> ChangeStream:
        """A stream of the events applied from now on."""
        return ChangeStream(self)

    async def wait_for(self, predicate: Callable[[RegistryCache], bool], timeout: float) -> None:
        """Return once ``predicate(cache)`` holds, re-checking after every change.

        Raises:
            TimeoutError: it still does not hold after ``timeout`` seconds.
        """
        with self.watch() as events:
            if predicate(self):
                return
            async with asyncio.timeout(timeout):
                async for _ in events:
                    if predicate(self):
                        return
        raise RegistryClosedError("the registry cache was closed while waiting for a condition")

    def close(self) -> None:
        """End every open change stream."""
        for stream in list(self._streams):
            stream.close()


def _discard(index: dict[str, set[str]], key: str, id: str) -> None:
    ids = index.get(key)
    if ids is not None:
        ids.discard(id)
        if not ids:
            del index[key]
