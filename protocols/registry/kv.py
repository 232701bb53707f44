"""The registry backend on the ``registry`` JetStream KV bucket.

Every write carries a per-message TTL (the ``Nats-TTL`` header), so an entry
that stops being rewritten disappears on its own: this is how the entries of
a node that died without cleaning up go away. The bucket's stream is set up
with subject delete markers, so the server writes a marker when a TTL runs
out and every watcher learns of the expiry as a change, not by polling.

The server counts TTLs in whole seconds; a TTL is rounded up, minimum 1 s.

Any client can write the bucket, also without a TTL. The bucket therefore has
a max age (:data:`MAX_AGE`) as well: an entry that is not rewritten by a
heartbeat goes away after it whatever its writer asked for. A record that is
not an entry, or whose ``id`` is not its key, is skipped by the watch and
counts as absent for writes (so the owner of the key overwrites it), with a
warning naming the key.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator

from broker import (
    TRANSPORT_ERRORS,
    BadSubscriptionError,
    CasConflictError,
    Connection,
    ConnectionClosedError,
    JetStream,
    JetStreamError,
    KeyValueBucket,
    KeyWatcher,
    catalog,
    jetstream,
    latest_record,
    open_expiring_bucket,
    reconnects,
    subjects,
    watch_update,
    write_record,
)
from broker.expiring import MARKER_REASON
from broker.subjects import KV_DELETE, KV_OPERATION, KV_PURGE
from config.errors import BrokerError
from protocols.registry.backend import Change, ChangeKind
from protocols.registry.entry import Entry
from protocols.registry.errors import (
    EntryExistsError,
    InvalidEntryError,
    RegistryUnavailableError,
    RevisionMismatchError,
)

log = logging.getLogger("foundation.registry")

# How long the server keeps the marker of an expired key. Long enough for a
# watcher that was briefly disconnected to still see the expiry on resume.
MARKER_TTL = 60.0
# The longest any record stays in the bucket without being rewritten; every
# registry TTL must be shorter (heartbeats rewrite an entry every ttl / 3).
MAX_AGE = catalog.REGISTRY_MAX_AGE


def _ttl_seconds(ttl: float) -> int:
    if not 0 < ttl < MAX_AGE:
        raise InvalidEntryError(f"registry TTL must be in (0, {MAX_AGE:g}) seconds, got {ttl}")
    return max(1, math.ceil(ttl))


def parse_record(key: str, data: bytes | None, revision: int | None) -> Entry | None:
    """The entry stored under ``key``, or None (logged with the key) if it is not a valid one."""
    try:
        entry = Entry.from_json(data or b"")
        if entry.id != key:
            raise InvalidEntryError(f"its id {entry.id!r} is not its key")
    except InvalidEntryError as exc:
        # Another writer put garbage under a key: skip it rather than stop every cache.
        log.warning("registry: skipping the record under key %r at revision %s: %s", key, revision, exc)
        return None
    return entry


class _KVWatch:
    """Turns the bucket watcher's entries into :class:`Change` values."""

    def __init__(self, watcher: KeyWatcher, nc: Connection, epoch: int) -> None:
        self._watcher = watcher
        self._nc = nc
        self._epoch = epoch

    def __aiter__(self) -> AsyncIterator[Change | None]:
        return self

    async def __anext__(self) -> Change | None:
        while True:
            # Raises StaleWatchError after a reconnect: the registry then opens a new watch.
            item = await watch_update(self._watcher, self._nc, self._epoch)
            if item is None:
                return None
            if item.operation == KV_DELETE:
                return Change(ChangeKind.DELETE, item.key, None, item.revision)
            if item.operation == KV_PURGE:
                # nats-py reports server TTL markers ("MaxAge") as purges; we never purge.
                return Change(ChangeKind.EXPIRE, item.key, None, item.revision)
            entry = parse_record(item.key, item.value, item.revision)
            if entry is None:
                # A malformed record replaces whatever was there: to the cache, the key is gone.
                return Change(ChangeKind.DELETE, item.key, None, item.revision)
            return Change(ChangeKind.PUT, item.key, entry, item.revision)

    async def stop(self) -> None:
        try:
            await self._watcher.stop()
        except (ConnectionClosedError, BadSubscriptionError):
            pass  # already gone with its connection


class KVBackend:
    """A :class:`~protocols.registry.backend.RegistryBackend` on a KV bucket.

    Build it with :meth:`open`, which creates or adapts the bucket.
    """

    def __init__(self, js: JetStream, kv: KeyValueBucket, bucket: str, nc: Connection | None = None) -> None:
        self._js = js
        self._nc = nc if nc is not None else js._nc
        self._kv = kv
        self.bucket = bucket

    @classmethod
    async def open(cls, nc: Connection, bucket: str = subjects.REGISTRY_BUCKET, *,
                   marker_ttl: float = MARKER_TTL) -> KVBackend:
        """Open (creating if needed) the bucket with per-key TTL and expiry markers.

        Raises:
            RegistryUnavailableError: the bucket could not be created or adapted.
        """
        js = jetstream(nc)
        try:
            kv = await open_expiring_bucket(js, bucket, marker_ttl=marker_ttl, max_age=MAX_AGE)
        except (BrokerError, JetStreamError, *TRANSPORT_ERRORS) as exc:
            raise RegistryUnavailableError(f"cannot open the KV bucket {bucket!r}: {exc}") from exc
        return cls(js, kv, bucket, nc)

    async def _write(self, id: str, data: bytes, *, ttl: float | None = None, revision: int | None = None,
                     delete: bool = False) -> int:
        ttl_s = None if ttl is None else _ttl_seconds(ttl)
        try:
            return await write_record(self._js, self.bucket, id, data, ttl_s=ttl_s, revision=revision, delete=delete)
        except CasConflictError as exc:
            raise RevisionMismatchError(f"registry entry {id!r} changed since revision {revision}") from exc
        except BrokerError as exc:
            raise RegistryUnavailableError(f"registry write of {id!r} failed: {exc}; is NATS reachable?") from exc

    async def put(self, entry: Entry, ttl: float) -> int:
        return await self._write(entry.id, entry.to_json(), ttl=ttl)

    async def create(self, entry: Entry, ttl: float) -> int:
        # The key's latest message may be a tombstone; creating over it is allowed.
        current = await self._latest(entry.id)
        if current is not None and current[1] is not None:
            raise EntryExistsError(f"registry entry {entry.id!r} already exists; unregister it first")
        expected = 0 if current is None else current[0]
        try:
            return await self.update(entry, ttl, expected)
        except RevisionMismatchError as exc:
            raise EntryExistsError(f"registry entry {entry.id!r} was created concurrently") from exc

    async def update(self, entry: Entry, ttl: float, revision: int) -> int:
        return await self._write(entry.id, entry.to_json(), ttl=ttl, revision=revision)

    async def _latest(self, id: str) -> tuple[int, Entry | None] | None:
        """(revision, entry) of the key's latest message; entry None for a tombstone or
        expiry marker; None if the key has no message at all."""
        try:
            msg = await latest_record(self._js, self.bucket, id)
        except BrokerError as exc:
            raise RegistryUnavailableError(f"registry read of {id!r} failed: {exc}") from exc
        if msg is None:
            return None
        headers = msg.headers
        if headers.get(KV_OPERATION) in (KV_DELETE, KV_PURGE) or MARKER_REASON in headers or not msg.data:
            return msg.seq, None
        return msg.seq, parse_record(id, msg.data, msg.seq)

    async def get(self, id: str) -> tuple[Entry, int] | None:
        latest = await self._latest(id)
        if latest is None or latest[1] is None:
            return None
        return latest[1], latest[0]

    async def delete(self, id: str, revision: int | None = None) -> int | None:
        return await self._write(id, b"", revision=revision, delete=True)

    async def watch(self) -> _KVWatch:
        epoch = reconnects(self._nc)
        try:
            watcher = await self._kv.watchall()
        except (JetStreamError, *TRANSPORT_ERRORS) as exc:
            raise RegistryUnavailableError(f"cannot watch the KV bucket {self.bucket!r}: {exc}") from exc
        return _KVWatch(watcher, self._nc, epoch)
