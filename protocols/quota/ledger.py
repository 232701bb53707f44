"""The quota ledger: every grant, recorded in KV before it is handed out.

Bucket ``quota``; one record per (pool, rate window) and one slot table per pool::

    <pool>.rate.<window>   {"v": 1, "pool", "window", "window_s", "budget",
                            "grants": [{"id", "holder", "tokens", "term"}, ...]}
    <pool>.slots           {"v": 1, "pool", "max", "term", "holders": {holder: n}}

Window ``k`` covers wall-clock time ``[origin + k * window_s, origin + (k + 1) * window_s)``;
the origin is the epoch unless a budget sets another.
Every write is a compare-and-set on the record's revision, so two services
that both believe they lead (a failover in progress) still add to one total:
the budget holds across failovers exactly, not only approximately. Window
records expire an hour after their last write (they are only needed for the
current window and for audits); the slot table never expires.

Any client can write the bucket, so records are parsed strictly
(:func:`parse_window`, :func:`parse_slots`); a malformed record never raises
into a request or an election. A malformed window reads as *spent* (no token
is handed out against a record nobody can count; the next window is a new
key), a malformed slot table as empty (overwritten by the next CAS write).
Both are logged with their key.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any

from broker import (
    TRANSPORT_ERRORS,
    CasConflictError,
    Connection,
    JetStream,
    JetStreamError,
    KeyValueBucket,
    codec,
    current_values,
    jetstream,
    key_value,
    latest_record,
    subjects,
    write_record,
)
from config.errors import BrokerError
from protocols.quota.errors import LedgerConflictError, QuotaError, QuotaUnavailableError

log = logging.getLogger("foundation.quota")

QUOTA_BUCKET = subjects.QUOTA_BUCKET
_MAX_INT = 2**53
MALFORMED_HOLDER = "(malformed record)"
RECORD_TTL = 3600.0
_VERSION = 1


@dataclass(frozen=True)
class Grant:
    """Tokens handed to one holder in one window, by the service of one term."""

    id: str
    holder: str
    tokens: int
    term: int


@dataclass(frozen=True)
class Window:
    """The grants of one rate window. ``revision`` 0: not written yet."""

    pool: str
    index: int
    window_s: float
    budget: int
    grants: tuple[Grant, ...] = ()
    revision: int = 0
    origin: float = 0.0

    @property
    def granted(self) -> int:
        return sum(g.tokens for g in self.grants)

    @property
    def remaining(self) -> int:
        return max(0, self.budget - self.granted)

    @property
    def start(self) -> float:
        return self.origin + self.index * self.window_s

    @property
    def end(self) -> float:
        return self.origin + (self.index + 1) * self.window_s

    def with_grant(self, grant: Grant) -> Window:
        return replace(self, grants=(*self.grants, grant))

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": _VERSION, "pool": self.pool, "window": self.index, "window_s": self.window_s, "origin": self.origin,
            "budget": self.budget,
            "grants": [{"id": g.id, "holder": g.holder, "tokens": g.tokens, "term": g.term} for g in self.grants],
        }

    @classmethod
    def from_dict(cls, data: Any, revision: int) -> Window:
        """Parse a window record strictly.

        Raises:
            QuotaError: a field is missing or of the wrong type or range.
        """
        if not isinstance(data, dict) or not isinstance(data.get("grants"), list):
            raise QuotaError("a window record is an object with a list of grants")
        grants = []
        for g in data["grants"]:
            if not isinstance(g, dict):
                raise QuotaError("a grant is an object")
            grants.append(Grant(_text(g, "id"), _text(g, "holder"), _count(g, "tokens"), _count(g, "term")))
        return cls(
            pool=_text(data, "pool"), index=_count(data, "window", signed=True), window_s=_seconds(data, "window_s"),
            budget=_count(data, "budget"), revision=revision, origin=_seconds(data, "origin", 0.0, zero=True),
            grants=tuple(grants),
        )


@dataclass(frozen=True)
class SlotTable:
    """Concurrency slots held per holder. ``revision`` 0: not written yet."""

    pool: str
    max: int
    term: int = 0
    holders: dict[str, int] = field(default_factory=dict)
    revision: int = 0

    @property
    def held(self) -> int:
        return sum(self.holders.values())

    def to_dict(self) -> dict[str, Any]:
        return {"v": _VERSION, "pool": self.pool, "max": self.max, "term": self.term, "holders": self.holders}

    @classmethod
    def from_dict(cls, data: Any, revision: int) -> SlotTable:
        """Parse a slot table strictly.

        Raises:
            QuotaError: a field is missing or of the wrong type or range.
        """
        if not isinstance(data, dict) or not isinstance(data.get("holders"), dict):
            raise QuotaError("a slot table is an object with an object of holders")
        holders = {str(h): _count({"n": n}, "n") for h, n in data["holders"].items()}
        return cls(pool=_text(data, "pool"), max=_count(data, "max"), term=_count(data, "term"), holders=holders,
                   revision=revision)


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise QuotaError(f"{name} must be a string, got {value!r}")
    return value


def _count(data: dict[str, Any], name: str, *, signed: bool = False) -> int:
    value = data.get(name)
    low = -_MAX_INT if signed else 0
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= _MAX_INT:
        raise QuotaError(f"{name} must be an integer in [{low}, {_MAX_INT}], got {value!r}")
    return value


def _seconds(data: dict[str, Any], name: str, default: float | None = None, *, zero: bool = False) -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise QuotaError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not zero):
        raise QuotaError(f"{name} must be {'>= 0' if zero else '> 0'}, got {value!r}")
    return float(value)


def window_index(now: float, window_s: float, origin: float = 0.0) -> int:
    """The window holding wall-clock instant ``now``."""
    return math.floor((now - origin) / window_s)


class Ledger:
    """Reads and compare-and-set writes of one pool's ledger records."""

    def __init__(self, js: JetStream, kv: KeyValueBucket, pool: str, bucket: str = QUOTA_BUCKET) -> None:
        self.pool = subjects.token(pool, "pool name")
        self._js = js
        self._kv = kv
        self._bucket = bucket

    @classmethod
    async def open(cls, nc: Connection, pool: str, bucket: str = QUOTA_BUCKET) -> Ledger:
        """Open (creating if needed) the ledger bucket.

        Raises:
            QuotaUnavailableError: the bucket could not be opened.
        """
        js = jetstream(nc)
        try:
            kv = await key_value(js, bucket, per_key_ttl=True)
        except (JetStreamError, *TRANSPORT_ERRORS) as exc:
            raise QuotaUnavailableError(f"cannot open the quota ledger bucket {bucket!r}: {exc}") from exc
        return cls(js, kv, pool, bucket)

    def _window_key(self, index: int) -> str:
        return f"{self.pool}.rate.{index}"

    @property
    def _slots_key(self) -> str:
        return f"{self.pool}.slots"

    async def _read(self, key: str) -> tuple[dict[str, Any] | None, int]:
        try:
            msg = await latest_record(self._js, self._bucket, key)
        except BrokerError as exc:
            raise QuotaUnavailableError(f"cannot read ledger record {key!r}: {exc}") from exc
        if msg is None:
            return None, 0
        if not msg.data:  # a tombstone or expiry marker: the next write goes over it
            return None, msg.seq
        try:
            body = codec.decode(msg.data)
        except codec.CodecError as exc:
            log.warning("quota: ledger record %r is not JSON (%s); was it written by hand?", key, exc)
            return {}, msg.seq
        return (body if isinstance(body, dict) else {}), msg.seq

    async def _write(self, key: str, record: dict[str, Any], revision: int, ttl: float | None) -> int:
        ttl_s = None if ttl is None else math.ceil(ttl)
        try:
            return await write_record(self._js, self._bucket, key, codec.encode(record), ttl_s=ttl_s, revision=revision)
        except CasConflictError as exc:
            raise LedgerConflictError(f"ledger record {key!r} changed since revision {revision}") from exc
        except BrokerError as exc:
            raise QuotaUnavailableError(f"ledger write of {key!r} failed: {exc}") from exc

    async def window(self, index: int, window_s: float, budget: int, origin: float = 0.0) -> Window:
        """The record of window ``index``; an empty one (revision 0 or a tombstone's) if none."""
        key = self._window_key(index)
        data, revision = await self._read(key)
        if data is None:
            return Window(self.pool, index, window_s, budget, revision=revision, origin=origin)
        try:
            return Window.from_dict(data, revision)
        except QuotaError as exc:
            log.warning("quota: ledger record %r is malformed (%s); its window counts as spent", key, exc)
            spent = Grant(MALFORMED_HOLDER, MALFORMED_HOLDER, budget, 0)
            return Window(self.pool, index, window_s, budget, grants=(spent,), revision=revision, origin=origin)

    async def save_window(self, window: Window) -> Window:
        """Write a window by CAS; returns it with its new revision.

        Raises:
            LedgerConflictError: the record changed since ``window`` was read.
        """
        revision = await self._write(self._window_key(window.index), window.to_dict(), window.revision, RECORD_TTL)
        return replace(window, revision=revision)

    async def slots(self, max_concurrency: int) -> SlotTable:
        """The pool's slot table; an empty one if none was written."""
        data, revision = await self._read(self._slots_key)
        if data is None:
            return SlotTable(self.pool, max_concurrency, revision=revision)
        try:
            return replace(SlotTable.from_dict(data, revision), max=max_concurrency)
        except QuotaError as exc:
            log.warning("quota: ledger record %r is malformed (%s); reading it as empty", self._slots_key, exc)
            return SlotTable(self.pool, max_concurrency, revision=revision)

    async def save_slots(self, table: SlotTable) -> SlotTable:
        """Write the slot table by CAS; returns it with its new revision.

        Raises:
            LedgerConflictError: the table changed since it was read.
        """
        revision = await self._write(self._slots_key, table.to_dict(), table.revision, None)
        return replace(table, revision=revision)

    async def windows(self) -> list[Window]:
        """Every recorded window of the pool, oldest first (for audits and tests)."""
        try:
            records = await current_values(self._js, self._kv, self._bucket, f"{self.pool}.rate.*")
        except BrokerError as exc:
            raise QuotaUnavailableError(f"cannot list the ledger of pool {self.pool!r}: {exc}") from exc
        found = []
        for key, (value, revision) in records.items():
            if value:
                try:
                    found.append(Window.from_dict(codec.decode(value), revision))
                except (codec.CodecError, QuotaError) as exc:
                    log.warning("quota: skipping ledger record %r: %s", key, exc)
        return sorted(found, key=lambda w: w.index)
