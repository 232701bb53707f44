"""The registry: one interface for writing entries and reading the local cache.

Writes go to the backend (the shared bucket); reads never leave the process.
A :class:`Registry` runs one backend watch that feeds its
:class:`~protocols.registry.cache.RegistryCache`; :func:`open_registry`
returns it only once the cache holds every entry that existed when it opened.

The watch is restarted, with backoff, after any error or end it was not
asked for (a NATS outage, a server restart): the new watch replays the
bucket, and once it has caught up every cached entry it did not replay is
dropped as expired (it went away while the watch was down). A malformed
record never reaches the cache (see :mod:`protocols.registry.kv`).

Ownership: an entry belongs to the process that registered it. Heartbeats
rewrite it by compare-and-set on the revision this process last wrote, so a
heartbeat never overwrites a newer entry of a respawned slot, and an entry
removed by ``unregister`` is not brought back by a late heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from broker import Connection, subjects
from protocols.registry.backend import Change, ChangeKind, RegistryBackend
from protocols.registry.cache import ChangeStream, RegistryCache
from protocols.registry.entry import Entry, Load, Status
from protocols.registry.errors import (
    EntryExistsError,
    NotRegisteredError,
    RegistrationTakenError,
    RegistryClosedError,
    RegistryError,
    RegistryUnavailableError,
    RevisionMismatchError,
)
from protocols.registry.kv import KVBackend
from protocols.registry.query import Condition

log = logging.getLogger("foundation.registry")

DEFAULT_TTL = 10.0
"""Seconds an entry outlives its last heartbeat: how long a lost node's agents stay listed."""

_CAS_ATTEMPTS = 5
# Pauses between attempts to restart a failed watch: doubling, capped.
WATCH_BACKOFF = (0.1, 5.0)

Sample = Callable[[], tuple[Status | str | None, Load | None]]


class Registry:
    """Register, heartbeat and unregister agents; read the local cache.

    Args:
        backend: where entries live (the KV bucket, or memory for tests).
        ttl: seconds an entry lives without a heartbeat.
    """

    def __init__(self, backend: RegistryBackend, *, ttl: float = DEFAULT_TTL) -> None:
        self.backend = backend
        self.ttl = ttl
        self.cache = RegistryCache()
        self._own: dict[str, tuple[Entry, int]] = {}
        self._primed = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        self._watch_error: BaseException | None = None

    @property
    def heartbeat_interval(self) -> float:
        """How often an owner should heartbeat: three beats per TTL ride out one lost beat."""
        return self.ttl / 3

    # -- lifecycle ----------------------------------------------------------

    async def start(self, timeout: float = 10.0) -> None:
        """Start the watch; return once the cache holds the entries that exist now.

        Raises:
            RegistryUnavailableError: the watch did not prime within ``timeout``.
        """
        watch = await self.backend.watch()
        self._watch_task = asyncio.create_task(self._follow_forever(watch), name="registry-watch")
        primed = asyncio.ensure_future(self._primed.wait())
        done, _ = await asyncio.wait({primed, self._watch_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if primed not in done:
            primed.cancel()
            await self.close(unregister=False)
            raise RegistryUnavailableError(
                f"the registry cache did not load within {timeout}s"
                + (f": {self._watch_error}" if self._watch_error else "; is NATS reachable?")
            )

    async def _follow_forever(self, watch: Any) -> None:
        """Follow the watch; whenever it fails or ends, open a new one after a pause."""
        pause, longest = WATCH_BACKOFF
        try:
            while True:
                if watch is not None:
                    caught_up = await self._follow(watch)
                    if caught_up:
                        pause = WATCH_BACKOFF[0]  # it worked for a while: start the backoff afresh
                await asyncio.sleep(pause)  # a backoff pause between reconnects, not a wait for an event
                pause = min(pause * 2, longest)
                try:
                    watch = await self.backend.watch()
                except Exception as exc:  # any failure to reopen: try again after the next pause
                    self._watch_error = exc
                    log.warning("registry watch could not restart: %s; retrying in %.1fs", exc, pause)
                    watch = None
        finally:
            self.cache.close()

    async def _follow(self, watch: Any) -> bool:
        """Apply one watch's changes until it ends; whether it caught up first."""
        replayed: set[str] | None = set()
        try:
            async for change in watch:
                if change is None:
                    if replayed is not None:
                        self.cache.retain(replayed)  # entries that went away while no watch ran
                        replayed = None
                    self._primed.set()
                    continue
                if replayed is not None:
                    replayed.add(change.id)
                self.cache.apply(change)
            log.warning("registry watch ended; restarting it")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the watch is this cache's only feed: say why, then restart it
            self._watch_error = exc
            log.warning("registry watch failed: %r; restarting it", exc)
        finally:
            with contextlib.suppress(Exception):
                await watch.stop()
        return replayed is None

    async def close(self, *, unregister: bool = True) -> None:
        """Stop the watch; by default first remove the entries this process registered."""
        if unregister:
            for id in list(self._own):
                with contextlib.suppress(RegistryError):
                    await self.unregister(id)
        task, self._watch_task = self._watch_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.cache.close()

    # -- writes -------------------------------------------------------------

    def owns(self, id: str) -> bool:
        """Whether this process registered ``id`` and still heartbeats it."""
        return id in self._own

    def _applied(self, kind: ChangeKind, id: str, entry: Entry | None, revision: int | None) -> None:
        # Read-your-writes: the same change arrives later by the watch and is dropped by revision.
        if revision is not None:
            self.cache.apply(Change(kind, id, entry, revision))

    async def register(self, entry: Entry) -> Entry:
        """Publish an agent's entry and make this process its owner.

        A live entry under the same id from the same node is replaced (the slot
        was respawned); one from another node is not, since ids must be unique
        across the cluster.

        Raises:
            RegistrationTakenError: a live entry with this id belongs to another node.
            RegistryUnavailableError: the backend could not be reached.
        """
        for _ in range(_CAS_ATTEMPTS):
            try:
                revision = await self.backend.create(entry, self.ttl)
                break
            except EntryExistsError:
                current = await self.backend.get(entry.id)
                if current is None:
                    continue  # removed in between: try creating again
                if current[0].node != entry.node:
                    raise RegistrationTakenError(
                        f"registry id {entry.id!r} is held by pid {current[0].pid} on node {current[0].node!r}; "
                        "agent ids must be unique across the cluster (qualify them with the node name)"
                    ) from None
                try:
                    revision = await self.backend.update(entry, self.ttl, current[1])
                    break
                except RevisionMismatchError:
                    continue
        else:
            raise RegistryUnavailableError(f"registry id {entry.id!r} kept changing under {_CAS_ATTEMPTS} attempts")
        self._own[entry.id] = (entry, revision)
        self._applied(ChangeKind.PUT, entry.id, entry, revision)
        return entry

    async def heartbeat(
        self,
        id: str,
        *,
        status: Status | str | None = None,
        load: Load | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Entry:
        """Refresh an owned entry's TTL, with new status/load/metadata if given.

        If the entry expired meanwhile (this process was paused past the TTL),
        it is registered again: the agent is evidently alive.

        Raises:
            NotRegisteredError: this process does not own ``id``.
            RegistrationTakenError: another process now holds ``id``.
            RegistryUnavailableError: the backend could not be reached.
        """
        owned = self._own.get(id)
        if owned is None:
            raise NotRegisteredError(
                f"heartbeat for {id!r}, which this process did not register; call register() first"
            )
        entry, revision = owned
        entry = entry.beat(status=status, load=load, metadata=metadata)
        for _ in range(_CAS_ATTEMPTS):
            try:
                revision = await self.backend.update(entry, self.ttl, revision)
                break
            except RevisionMismatchError:
                current = await self.backend.get(id)
            if current is None:
                if id not in self._own:
                    # Unregistered while this beat was in flight: do not bring it back.
                    raise NotRegisteredError(f"{id!r} was unregistered during its heartbeat")
                try:
                    revision = await self.backend.create(entry, self.ttl)
                    break
                except EntryExistsError:
                    continue
            holder = current[0]
            if holder.node != entry.node or holder.pid != entry.pid:
                self._own.pop(id, None)
                raise RegistrationTakenError(
                    f"registry id {id!r} is now held by pid {holder.pid} on node {holder.node!r}; stop heartbeating it"
                )
            revision = current[1]  # our own earlier write whose acknowledgement we lost
        else:
            raise RegistryUnavailableError(f"registry id {id!r} kept changing under {_CAS_ATTEMPTS} attempts")
        if id in self._own:  # not unregistered while the write was in flight
            self._own[id] = (entry, revision)
        self._applied(ChangeKind.PUT, id, entry, revision)
        return entry

    async def unregister(self, id: str, *, pid: int | None = None, node: str | None = None) -> bool:
        """Remove an entry now, rather than at its TTL.

        The supervisor calls this when a worker process exits, passing the
        exited ``pid`` and its ``node`` so that a respawned slot's fresh entry is
        never removed by mistake.

        Returns:
            True if an entry was removed.

        Raises:
            RegistryUnavailableError: the backend could not be reached.
        """
        self._own.pop(id, None)
        for _ in range(_CAS_ATTEMPTS):
            current = await self.backend.get(id)
            if current is None:
                return False
            entry, revision = current
            if (pid is not None and entry.pid != pid) or (node is not None and entry.node != node):
                return False  # someone else's entry now: leave it
            try:
                removed = await self.backend.delete(id, revision)
            except RevisionMismatchError:
                continue
            self._applied(ChangeKind.DELETE, id, None, removed)
            return True
        raise RegistryUnavailableError(f"registry id {id!r} kept changing under {_CAS_ATTEMPTS} attempts")

    async def heartbeat_forever(self, id: str, sample: Sample | None = None, interval: float | None = None) -> None:
        """Heartbeat ``id`` every ``interval`` seconds until cancelled.

        Args:
            id: an id this process registered.
            sample: called before each beat; returns (status, load), either may be None.
            interval: seconds between beats; defaults to :attr:`heartbeat_interval`.

        Raises:
            RegistrationTakenError: another process took the id (the loop stops).
            NotRegisteredError: the id was unregistered (the loop stops).
        """
        period = self.heartbeat_interval if interval is None else interval
        while True:
            await asyncio.sleep(period)
            status, load = sample() if sample is not None else (None, None)
            try:
                await self.heartbeat(id, status=status, load=load)
            except RegistryUnavailableError as exc:
                # A NATS blip: keep beating; the entry survives up to the TTL without us.
                log.warning("registry heartbeat of %r failed: %s", id, exc)

    # -- reads (local, never leave the process) ------------------------------

    def lookup(self, id: str) -> Entry | None:
        """The entry with this id, or None. A dict read."""
        return self.cache._entries.get(id)

    def find(self, *, capability: str | None = None, pool: str | None = None,
             node: str | None = None, status: Status | str | None = None) -> list[Entry]:
        """Entries matching every given criterion (see :meth:`RegistryCache.find`)."""
        return self.cache.find(capability=capability, pool=pool, node=node, status=status)

    def query(self, conditions: Iterable[Sequence[Any] | Condition], *, capability: str | None = None,
              pool: str | None = None, node: str | None = None,
              status: Status | str | None = None) -> list[Entry]:
        """Entries matching ``[(path, op, value), ...]`` (see :mod:`protocols.registry.query`).

        Raises:
            InvalidQueryError: a condition is malformed.
        """
        return self.cache.query(conditions, capability=capability, pool=pool, node=node, status=status)

    def least_loaded(self, capability: str, n: int = 1) -> list[Entry]:
        """Up to ``n`` ready or busy agents with the capability, fewest in flight first."""
        return self.cache.least_loaded(capability, n)

    def entries(self) -> list[Entry]:
        """Every entry in the cache."""
        return self.cache.entries()

    def watch(self) -> ChangeStream:
        """Changes to the cache from now on: ``async with reg.watch() as events: async for e in events``."""
        if self._watch_task is None:
            raise RegistryClosedError("the registry is not started; use open_registry()")
        return self.cache.watch()

    async def wait_for(self, predicate: Callable[[RegistryCache], bool], timeout: float) -> None:
        """Return once ``predicate(cache)`` holds (checked after every change).

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        await self.cache.wait_for(predicate, timeout)

    def __len__(self) -> int:
        return len(self.cache)


@contextlib.asynccontextmanager
async def open_registry(
    nc: Connection | None = None,
    *,
    backend: RegistryBackend | None = None,
    bucket: str = subjects.REGISTRY_BUCKET,
    ttl: float = DEFAULT_TTL,
    timeout: float = 10.0,
) -> AsyncIterator[Registry]:
    """Open a registry whose cache is loaded when the block starts.

    Give either a NATS connection (the ``registry`` KV bucket is used, created
    if missing) or a ``backend``. On exit the entries registered through it are
    unregistered and the watch stops.

    Raises:
        RegistryUnavailableError: the bucket could not be opened or watched.
    """
    if (nc is None) == (backend is None):
        raise RegistryError("open_registry needs exactly one of a NATS connection or a backend")
    if backend is None:
        backend = await KVBackend.open(nc, bucket)  # type: ignore[arg-type]
    registry = Registry(backend, ttl=ttl)
    await registry.start(timeout)
    try:
        yield registry
    finally:
        await registry.close()
