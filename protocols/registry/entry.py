"""One registry entry per live agent, and its JSON form.

The JSON form is the wire contract other languages read from the ``registry``
bucket and from the query endpoint::

    {"v": 1, "id": "echo.0", "pool": "echo", "node": "host-a", "pid": 4242,
     "capabilities": ["echo"], "metadata": {...}, "status": "ready",
     "load": {"in_flight": 0, "processed": 17},
     "started_at": 1767225600.0, "heartbeat_at": 1767225612.5}

Times are wall-clock seconds since the epoch (the entries cross hosts).
Unknown fields are ignored so newer writers do not break older readers.

Any client can write the bucket, so :meth:`Entry.from_dict` is the one strict
parser of this record: every field must have its documented type (strings
non-empty where they index, integers not booleans and within 64 bits, times
finite, capabilities tokens without whitespace), or the record is refused
with :class:`InvalidEntryError` naming the field. Readers skip refused
records with a warning that names the key; nothing malformed reaches a cache.
"""

from __future__ import annotations

import math
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
# A capability is one token: no whitespace, not empty, of sane length.
_CAPABILITY_RE = re.compile(r"^\S{1,200}$")
_MAX_INT = 2**63 - 1
_MAX_CAPABILITIES = 256


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
        for name in ("pool", "node"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidEntryError(f"entry {self.id!r} needs a non-empty pool and node; {name} is {value!r}")
        if not _is_int(self.pid):
            raise InvalidEntryError(f"entry {self.id!r}: pid must be a non-negative integer, got {self.pid!r}")
        if not isinstance(self.capabilities, frozenset):
            object.__setattr__(self, "capabilities", frozenset(self.capabilities))
        if len(self.capabilities) > _MAX_CAPABILITIES or not all(
            isinstance(c, str) and _CAPABILITY_RE.match(c) for c in self.capabilities
        ):
            raise InvalidEntryError(
                f"entry {self.id!r}: capabilities must be at most {_MAX_CAPABILITIES} strings without whitespace"
            )
        if not isinstance(self.metadata, dict):
            raise InvalidEntryError(f"entry {self.id!r}: metadata must be an object")
        if not isinstance(self.load, Load) or not (_is_int(self.load.in_flight) and _is_int(self.load.processed)):
            raise InvalidEntryError(f"entry {self.id!r}: load counts must be non-negative integers, got {self.load!r}")
        for name in ("started_at", "heartbeat_at"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidEntryError(f"entry {self.id!r}: {name} must be a finite number, got {value!r}")
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
        """Build an entry from its JSON form, strictly (see the module docstring).

        Raises:
            InvalidEntryError: a required field is missing or has the wrong type.
        """
        if not isinstance(data, dict):
            raise InvalidEntryError(f"an entry must be a JSON object, got {type(data).__name__}")
        for required in ("id", "pool", "node", "pid"):
            if required not in data:
                raise InvalidEntryError(f"entry is missing the field {required!r}")
        load = data.get("load") or {}
        capabilities = data.get("capabilities") or []
        metadata = data.get("metadata") or {}
        id = data["id"]
        if not isinstance(load, dict):
            raise InvalidEntryError(f"entry {id!r}: load must be an object")
        if not isinstance(capabilities, list):
            raise InvalidEntryError(f"entry {id!r}: capabilities must be a list of strings")
        if not isinstance(metadata, dict):
            raise InvalidEntryError(f"entry {id!r}: metadata must be an object")
        try:
            return cls(
                id=id,
                pool=data["pool"],
                node=data["node"],
                pid=data["pid"],
                capabilities=frozenset(capabilities),
                metadata=metadata,
                status=data.get("status", Status.STARTING),
                load=Load(load.get("in_flight", 0), load.get("processed", 0)),
                started_at=data.get("started_at", 0.0),
                heartbeat_at=data.get("heartbeat_at", 0.0),
            )
        except TypeError as exc:  # an unhashable capability
            raise InvalidEntryError(f"entry {id!r} is malformed: {exc}") from None

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


def _is_int(value: Any) -> bool:
    # bool is an int in Python; a pid of true is a mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_INT
