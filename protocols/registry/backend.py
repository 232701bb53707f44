"""The storage interface under the registry, and the changes it reports.

A backend is a key/value store of entries keyed by slot id, with per-key
time-to-live, compare-and-set on revisions, and a watch that first replays
the current entries and then reports every change. Revisions grow with every
write across the whole store, so a reader can drop a change it has already
applied (its own write, seen again through the watch).

Two backends implement it: :class:`~protocols.registry.kv.KVBackend` (the
``registry`` JetStream KV bucket, shared by every node) and
:class:`~protocols.registry.memory.MemoryBackend` (one process, for tests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from protocols.registry.entry import Entry


class ChangeKind(StrEnum):
    """What happened to a key."""

    PUT = "put"  # registered, or a heartbeat rewrote it
    DELETE = "delete"  # unregistered on purpose (agent exit, supervisor)
    EXPIRE = "expire"  # its TTL ran out (node lost) or an operator purged it


@dataclass(frozen=True, slots=True)
class Change:
    """One change of one key.

    Attributes:
        kind: put, delete or expire.
        id: the slot id (the key).
        entry: the new entry for a put; ``None`` for removals.
        revision: the store-wide revision of this change.
    """

    kind: ChangeKind
    id: str
    entry: Entry | None
    revision: int


@runtime_checkable
class BackendWatch(Protocol):
    """An async iterator of changes.

    It yields the current entries as puts, then ``None`` once (caught up),
    then live changes until :meth:`stop`.
    """

    def __aiter__(self) -> AsyncIterator[Change | None]: ...

    async def __anext__(self) -> Change | None: ...

    async def stop(self) -> None: ...


@runtime_checkable
class RegistryBackend(Protocol):
    """Storage of registry entries. Every write takes the entry's TTL in seconds."""

    async def put(self, entry: Entry, ttl: float) -> int:
        """Write unconditionally; returns the new revision."""
        ...

    async def create(self, entry: Entry, ttl: float) -> int:
        """Write only if no live entry has this id.

        Raises:
            EntryExistsError: a live entry has the id.
        """
        ...

    async def update(self, entry: Entry, ttl: float, revision: int) -> int:
        """Write only if the key's latest revision is ``revision``.

        Raises:
            RevisionMismatchError: it is not (changed, deleted or expired since).
        """
        ...

    async def get(self, id: str) -> tuple[Entry, int] | None:
        """The live entry and its revision, or ``None``."""
        ...

    async def delete(self, id: str, revision: int | None = None) -> int | None:
        """Remove the entry; with ``revision``, only if that is still the latest.

        Returns the revision of the removal, or None if there was nothing to remove
        and the backend wrote nothing.

        Raises:
            RevisionMismatchError: ``revision`` given and the key moved on.
        """
        ...

    async def watch(self) -> BackendWatch:
        """Start a watch over every key (see :class:`BackendWatch`)."""
        ...
