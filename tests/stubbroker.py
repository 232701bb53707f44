"""A stub twin of the broker side of a worker, for fast unit tests of the chain.

:class:`StubQueue` has the interface of :class:`broker.WorkQueue`,
:class:`StubOutcomes` that of :class:`broker.OutcomeStore`,
:class:`StubJournal` that of :class:`workers.AttemptJournal` and
:class:`StubStateStore` that of :class:`workers.StateStore` (a
compare-and-set bucket). Everything they are asked to do lands in one
shared :attr:`Record.events` list, in order, so a test can check that a
result was stored before its ack.
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import orjson

from broker import encode, subjects
from workers import StateConflictError, StoredState


@dataclass
class Record:
    """What the stubs were asked to do, in order: ``(what, task id or key, detail)``."""

    events: list[tuple[str, str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, what: str, who: str, detail: Any = None) -> None:
        self.events.append((what, who, detail))
        self.changed.set()

    def of(self, who: str) -> list[str]:
        return [what for what, w, _ in self.events if w == who]

    async def wait(self, predicate: Any, timeout: float = 5.0) -> None:
        async def _wait() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(_wait(), timeout)


class StubMsg:
    """A delivered task."""

    def __init__(self, body: Any, task_id: str, *, seq: int, attempt: int = 1, raw: bytes | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.data = raw if raw is not None else encode(body)
        self.headers = {subjects.MSG_ID: task_id, **(headers or {})}
        self.reply = f"$JS.ACK.TASKS.pool-t.{attempt}.{seq}.{seq}.0.0.0"
        # timestamp: when the task was stored in TASKS (its publish), as the server reports it
        self.metadata = SimpleNamespace(sequence=SimpleNamespace(stream=seq), num_delivered=attempt,
                                        timestamp=datetime.datetime.now(datetime.timezone.utc))
        self.task_id = task_id


class StubQueue:
    """:class:`broker.WorkQueue` without a server: hands out the messages it is given."""

    def __init__(self, record: Record, msgs: list[StubMsg] | None = None) -> None:
        self.record = record
        self.nc = SimpleNamespace(is_connected=True, is_closed=False, stats={"reconnects": 0})
        self.is_connected = True
        self.is_closed = False
        self.reconnects = 0
        self._msgs = list(msgs or [])
        self._last_seq = max((m.metadata.sequence.stream for m in self._msgs), default=0)
        self._more = asyncio.Event()

    def reconnected(self) -> None:
        """The connection came back."""
        self.reconnects += 1
        self.nc.stats["reconnects"] = self.reconnects

    def put(self, *msgs: StubMsg) -> None:
        self._msgs.extend(msgs)
        self._last_seq = max([self._last_seq, *(m.metadata.sequence.stream for m in msgs)])
        self._more.set()

    async def fetch(self, n: int, timeout: float) -> tuple[list[StubMsg], int]:
        if not self._msgs:
            self._more.clear()
            try:
                await asyncio.wait_for(self._more.wait(), timeout)
            except asyncio.TimeoutError:
                return [], 0
        out, self._msgs = self._msgs[:n], self._msgs[n:]
        return out, 0

    async def ack(self, msg: StubMsg) -> None:
        self.record.add("ack", msg.task_id)

    async def ack_confirmed(self, msg: StubMsg, timeout: float) -> None:
        self.record.add("ack_confirmed", msg.task_id)

    async def nak(self, msg: StubMsg, delay: float = 0.0) -> None:
        self.record.add("nak", msg.task_id, delay)

    async def in_progress(self, msg: StubMsg) -> None:
        self.record.add("in_progress", msg.task_id)

    async def term(self, msg: StubMsg) -> None:
        self.record.add("term", msg.task_id)

    async def delete(self, seq: int) -> None:
        self.record.add("delete", str(seq))

    async def still_queued(self, seq: int) -> bool:
        return True

    async def last_sequence(self) -> int:
        return self._last_seq

    async def flush(self, timeout: float) -> None:
        pass

    async def quiesce(self, *, withdraw: bool = True) -> None:
        pass

    async def withdraw(self) -> None:
        pass

    async def stop_receiving(self) -> None:
        pass

    def take_leftovers(self) -> list[StubMsg]:
        return []

    async def hand_back(self) -> int:
        return 0

    async def close(self) -> None:
        pass


class StubOutcomes:
    """:class:`broker.OutcomeStore` that keeps what it stores."""

    def __init__(self, record: Record) -> None:
        self.record = record
        self.results: dict[str, dict[str, Any]] = {}
        self.letters: dict[str, tuple[bytes, str, int]] = {}

    async def store_result(self, body: dict[str, Any], reply_to: str | None) -> None:
        self.results[body["task_id"]] = body
        self.record.add("result", body["task_id"], body)

    async def dead_letter(self, original: bytes, *, task_id: str, error: str, attempts: int) -> None:
        self.letters[task_id] = (original, error, attempts)
        self.record.add("dead_letter", task_id, error)


class StubJournal:
    """:class:`workers.AttemptJournal` in a dict, by stream sequence."""

    def __init__(self, record: Record) -> None:
        self.record = record
        self.entries: dict[int, dict[str, Any]] = {}

    async def started(self, pool: str, seq: int, **entry: Any) -> None:
        self.entries[seq] = entry
        self.record.add("running" if entry.get("running") else "journaled", str(entry.get("task_id")))

    async def failed(self, pool: str, seq: int, error: str, **entry: Any) -> None:
        self.entries[seq] = {**entry, "error": error}
        self.record.add("journal_error", str(entry.get("task_id")), error)

    async def last(self, pool: str, seq: int) -> dict[str, Any] | None:
        return self.entries.get(seq)


class StubStateStore:
    """:class:`workers.StateStore` in a dict: compare-and-set writes by revision."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[bytes, int]] = {}

    async def load(self, key: str) -> StoredState:
        raw, revision = self.values.get(key, (b"", 0))
        return StoredState.parse(raw, revision)

    async def write(self, key: str, data: bytes, revision: int) -> int:
        if self.values.get(key, (b"", 0))[1] != revision:
            raise StateConflictError(f"agent state {key} is no longer at revision {revision}")
        self.values[key] = (data, revision + 1)
        return revision + 1

    async def peers(self, pool: str, timeout: float = 5.0) -> dict[str, StoredState]:
        return {k: StoredState.parse(raw, rev) for k, (raw, rev) in self.values.items() if f".{pool}." in k}

    def seed(self, key: str, state: dict[str, Any], applied: list[str]) -> None:
        self.values[key] = (orjson.dumps({"v": 1, "state": state, "applied": applied, "outbox": {}}), 1)
