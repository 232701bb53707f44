"""One registry entry per live agent, and its JSON form.

The JSON form is the wire contract other languages read from the ``registry``
bucket and from the query endpoint::

    {"v": 1, "id": "echo.0", "pool": "echo", "node": "host-a", "pid": 4242,
     "capabilities": ["echo"], "metadata": {...}, "status": "ready",
     "load": {"in_flight": 0, "processed": 17},
     "started_at": 1767225600.0, "heartbeat_at": 1767225612.5}

Times are wall-clock seconds since the epoch (the entries cross hosts).
Unknown fields are ignored so newer writers do not break older readers.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from broker import codec
from protocols.registry.errors import InvalidEntryError

ENTRY_VERSION = 1

# A KV key: the slot id is used verbatim as the key of the registry bucket.
_ID_RE = re.compile(r"^[-_=a-zA-Z0-9]+(\.[-_=a-zA-Z0-9]+)*$")


class Status(StrEnum):
    """Where an agent is in its life. Only ``ready`` and ``busy`` take work."""

    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    DRAINING = "draining"


ACCEPTING = frozenset({Status.READY, Status.BUSY})


@dataclass(frozen=True, slots=True)
class Load:
    """How much an agent is doing: tasks in flight now, tasks done so far."""

    in_flight: int = 0
    processed: int = 0


@dataclass(frozen=True, slots=True)
class Entry:
    """A live agent as the registry knows it.

    Attributes:
        id: the stable slot id (``<pool>.<n>``), reused when the slot respawns.
        pool: the pool the agent belongs to.
        node: the node (supervisor host) running it.
        pid: its OS process id on that node.
        capabilities: what it can do; ``find(capability=...)`` indexes these.
        metadata: free-form JSON; ``query`` reaches into it by dotted path.
        status: starting, ready, busy or draining.
        load: in-flight and processed task counts.
        started_at: when the process started (epoch seconds).
        heartbeat_at: when it last reported (epoch seconds).
    """

    id: str
    pool: str
    node: str
    pid: int
    capabilities: frozenset[str] = frozenset()
    metadata: dict[str, Any] = field(default_factory=dict)
    status: Status = Status.STARTING
    load: Load = Load()
    started_at: float = 0.0
    heartbeat_at: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID_RE.match(self.id):
            raise InvalidEntryError(
                f"entry id {self.id!r} must be dot-separated tokens of letters, digits, '-', '_' or '=' (like 'echo.0')"
            )
        if not self.pool or not self.node:
            raise InvalidEntryError(f"entry {self.id!r} needs a non-empty pool and node")
        if not isinstance(self.pid, int) or self.pid < 0:
            raise InvalidEntryError(f"entry {self.id!r}: pid must be a non-negative integer, got {self.pid!r}")
        if not isinstance(self.capabilities, frozenset):
            object.__setattr__(self, "capabilities", frozenset(self.capabilities))
        try:
            object.__setattr__(self, "status", Status(self.status))
        except ValueError:
            raise InvalidEntryError(
                f"entry {self.id!r}: status {self.status!r} is not one of {[s.value for s in Status]}"
            ) from None

    @classmethod
    def new(
        cls,
        id: str,
        *,
        pool: str,
        node: str,
        pid: int,
        capabilities: frozenset[str] | list[str] | tuple[str, ...] = (),
        metadata: dict[str, Any] | None = None,
        status: Status | str = Status.STARTING,
    ) -> Entry:
        """An entry stamped with the current time as start and heartbeat."""
        now = time.time()
        return cls(
            id=id, pool=pool, node=node, pid=pid, capabilities=frozenset(capabilities),
            metadata=dict(metadata or {}), status=Status(status), started_at=now, heartbeat_at=now,
        )

    def beat(self, *, status: Status | str | None = None, load: Load | None = None,
             metadata: dict[str, Any] | None = None) -> Entry:
        """A copy with a fresh heartbeat time and, if given, new status/load/metadata."""
        return replace(
            self,
            status=self.status if status is None else Status(status),
            load=self.load if load is None else load,
            metadata=self.metadata if metadata is None else dict(metadata),
            heartbeat_at=time.time(),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (see the module docstring)."""
        return {
            "v": ENTRY_VERSION,
            "id": self.id,
            "pool": self.pool,
            "node": self.node,
            "pid": self.pid,
            "capabilities": sorted(self.capabilities),
            "metadata": self.metadata,
            "status": self.status.value,
            "load": {"in_flight": self.load.in_flight, "processed": self.load.processed},
            "started_at": self.started_at,
            "heartbeat_at": self.heartbeat_at,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Entry:
        """Build an entry from its JSON form.

        Raises:
            InvalidEntryError: a required field is missing or has the wrong type.
        """
        if not isinstance(data, dict):
            raise InvalidEntryError(f"an entry must be a JSON object, got {type(data).__name__}")
        try:
            load = data.get("load") or {}
            metadata = data.get("metadata") or {}
            if not isinstance(metadata, dict):
                raise InvalidEntryError(f"entry {data.get('id')!r}: metadata must be an object")
            return cls(
                id=data["id"],
                pool=data["pool"],
                node=data["node"],
                pid=data["pid"],
                capabilities=frozenset(data.get("capabilities") or ()),
                metadata=metadata,
                status=data.get("status", Status.STARTING),
                load=Load(int(load.get("in_flight", 0)), int(load.get("processed", 0))),
                started_at=float(data.get("started_at", 0.0)),
                heartbeat_at=float(data.get("heartbeat_at", 0.0)),
            )
        except KeyError as exc:
            raise InvalidEntryError(f"entry is missing the field {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise InvalidEntryError(f"entry {data.get('id')!r} is malformed: {exc}") from None

    def to_json(self) -> bytes:
        return codec.encode(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes) -> Entry:
        """Decode an entry from bucket bytes.

        Raises:
            InvalidEntryError: the bytes are not JSON or not an entry.
        """
        try:
            return cls.from_dict(codec.decode(data))
        except codec.CodecError as exc:
            raise InvalidEntryError(f"entry is not valid JSON: {exc}") from exc
