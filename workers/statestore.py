"""Where agent states live: one key per agent in the ``agent_state`` KV bucket.

The key of an agent is ``<node>.<slot>`` (``local.echo.0``): a slot number is
only unique within a node, and two processes writing one key would be a
conflict, not a state. A value is one JSON document::

    {"v": 1, "state": {...},          # what the handler sees as ctx.state
     "applied": ["t-1", "t-2", ...],  # task ids applied to it, oldest first
     "outbox": {"t-2": {"seq": 17, "result": {...}}}}  # applied, not yet settled

Every write is a compare-and-set on the key's revision, so a write that was
not based on the latest value fails instead of overwriting it.

Any client can write the bucket: :meth:`StoredState.parse` is the one strict
parser of this record. A malformed value of an agent's own key is logged
with the key and read as an empty state at its revision (the agent's next
write replaces it); a malformed value of a peer is skipped with a warning.
Neither stops a worker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from broker import TRANSIENT_ERRORS, CasBucket, CasConflictError, CodecError, decode, subjects
from config.errors import WorkerError

log = logging.getLogger("foundation.worker.state")

VERSION = 1


class StateRecordError(WorkerError):
    """A stored agent state is not of the documented shape."""


class StateError(WorkerError):
    """An agent's state can no longer be stored; the worker must stop (its
    tasks are redelivered, and the next process starts from the stored state)."""


class StateConflictError(StateError):
    """An agent's state key was written by someone else.

    Two processes act as the same agent (two nodes with one node name?), or
    the bucket was edited by hand. The worker stops rather than overwrite.
    """


@dataclass
class StoredState:
    """One agent's stored value and its revision (0: never written)."""

    state: dict[str, Any] = field(default_factory=dict)
    applied: list[str] = field(default_factory=list)
    outbox: dict[str, dict[str, Any]] = field(default_factory=dict)
    revision: int = 0
    raw: bytes = b""

    @classmethod
    def parse(cls, raw: bytes, revision: int) -> "StoredState":
        """Parse a stored value strictly.

        Raises:
            StateRecordError: not JSON, or a field of the wrong shape.
        """
        try:
            doc = decode(raw) if raw else {}
        except CodecError as exc:
            raise StateRecordError(f"agent state value is not JSON (revision {revision}): {exc}") from None
        if not isinstance(doc, dict):
            raise StateRecordError(f"agent state value is not a JSON object (revision {revision})")
        state, applied, outbox = doc.get("state") or {}, doc.get("applied") or [], doc.get("outbox") or {}
        if not isinstance(state, dict):
            raise StateRecordError(f"agent state 'state' is not an object (revision {revision})")
        if not isinstance(applied, list) or not all(isinstance(t, str) for t in applied):
            raise StateRecordError(f"agent state 'applied' is not a list of task ids (revision {revision})")
        if not isinstance(outbox, dict) or not all(isinstance(v, dict) for v in outbox.values()):
            raise StateRecordError(f"agent state 'outbox' is not an object of objects (revision {revision})")
        return cls(state=dict(state), applied=list(applied), outbox=dict(outbox), revision=revision, raw=raw)

    @classmethod
    def parse_or_empty(cls, key: str, raw: bytes, revision: int) -> "StoredState":
        """The parsed value, or (logged with its key) an empty state at ``revision`` if malformed."""
        try:
            return cls.parse(raw, revision)
        except StateRecordError as exc:
            log.error("agent state %s is malformed (%s); starting from an empty state over it", key, exc)
            return cls(revision=revision)


def agent_key(node: str, slot: str) -> str:
    """The KV key of the agent in ``slot`` on ``node``."""
    return f"{subjects.token(node, 'node name')}.{slot}"


class StateStore:
    """Reads and compare-and-set writes of agent states, in a :class:`broker.CasBucket`.

    Transient NATS errors (timeouts, reconnecting) propagate as
    :class:`broker.BrokerUnavailableError`: the caller decides whether to
    retry, because a timed-out write may or may not have been stored.
    """

    def __init__(self, kv: CasBucket) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: Any) -> "StateStore":
        """Open (creating if needed) the ``agent_state`` bucket."""
        return cls(await CasBucket.open(js, subjects.AGENT_STATE_BUCKET))

    async def load(self, key: str) -> StoredState:
        """The stored state of ``key``; an empty one at revision 0 if none."""
        got = await self.kv.get(key)
        if got is None:
            return StoredState()
        return StoredState.parse_or_empty(key, *got)

    async def write(self, key: str, data: bytes, revision: int) -> int:
        """Store ``data`` if the key is still at ``revision``; the new revision.

        Raises:
            StateConflictError: the key is at another revision.
        """
        try:
            return await self.kv.update(key, data, revision)
        except CasConflictError as exc:
            raise StateConflictError(f"agent state {key} is no longer at revision {revision}") from exc

    async def peers(self, pool: str, timeout: float = 5.0) -> dict[str, StoredState]:
        """The stored states of every agent of ``pool``, on any node, by key."""
        out: dict[str, StoredState] = {}
        for key, (raw, revision) in (await self.kv.values(f"*.{subjects.token(pool, 'pool name')}.*", timeout)).items():
            try:
                out[key] = StoredState.parse(raw, revision)
            except StateRecordError as exc:
                log.warning("agent state %s skipped: %s", key, exc)
        return out


TRANSIENT = TRANSIENT_ERRORS  # re-exported for the state modules
