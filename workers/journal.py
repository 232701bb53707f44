"""What is known about a task's last attempt, for its dead letter.

A task that kills its worker (segfault, ``os._exit``, the OOM killer or the
RSS quota) never reports an error: the process is gone. Two records, joined
when the task is dead-lettered, tell what happened:

* the **attempt journal** (KV bucket ``task_attempts``, key
  ``<pool>.<stream seq>``): before running a *redelivered* task (attempt 2
  and later) the worker records which worker, pid and node runs which
  attempt, and when. First deliveries are not journaled — they are nearly
  every task, and a task that dies on its first attempt is redelivered (and
  journaled) before it can exhaust ``max_deliver > 1``. A worker that gives
  up on a task itself (hard time limit) adds the error it knows.
* the **exit log**: the supervisor publishes every worker exit (``exit``
  events: pid, how) and quota breach (``quota`` events) on
  ``foundation.events.<node>.<kind>``. A stream keeps them (``WORKER_EXITS``,
  declared by :class:`broker.ExitLog` unless another stream already stores
  those subjects), so the exit of the pid that ran the last attempt can be
  found later by whoever dead-letters the task.

The result reads like ``worker exited: signal SIGSEGV`` or ``worker exited:
signal SIGKILL (quota rss 160.2 > 100.0)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from broker import (
    BrokerClosedError,
    Bucket,
    CodecError,
    ExitLog,
    JetStream,
    catalog,
    decode,
    encode,
    subjects,
)
from config.errors import BrokerError
from workers.statestore import TRANSIENT

log = logging.getLogger("foundation.worker.journal")

ATTEMPTS_BUCKET = subjects.ATTEMPTS_BUCKET
ATTEMPTS_TTL = catalog.ATTEMPTS_TTL
EXITS_STREAM = subjects.EXITS_STREAM


class AttemptJournal:
    """Records attempts of redelivered tasks; explains how the last one ended."""

    def __init__(self, bucket: Bucket, exits: ExitLog) -> None:
        self.bucket = bucket
        self.exits = exits

    @property
    def exits_stream(self) -> str | None:
        """The stream of the exit log (``None``: there is none)."""
        return self.exits.stream

    @classmethod
    async def open(cls, js: JetStream) -> "AttemptJournal":
        """Open the journal bucket and find (or declare) the exit log."""
        bucket = await Bucket.open(js, ATTEMPTS_BUCKET, ttl=ATTEMPTS_TTL)
        return cls(bucket, await ExitLog.open(js))

    @staticmethod
    def key(pool: str, seq: int) -> str:
        return f"{subjects.token(pool, 'pool name')}.{seq}"

    async def started(self, pool: str, seq: int, **record: Any) -> None:
        """Record that an attempt starts now (task_id, attempt, worker, node, pid).

        Best effort, three tries: a task must not wait on its own journal
        entry, which only serves to explain a death.
        """
        data = encode({**record, "started": time.time()})
        for delay in (0.05, 0.2, 0.0):
            try:
                await self.bucket.put(self.key(pool, seq), data)
                return
            except TRANSIENT as exc:
                log.debug("journal entry for %s.%s not stored: %s", pool, seq, exc)
                await asyncio.sleep(delay)

    async def failed(self, pool: str, seq: int, error: str, **record: Any) -> None:
        """Record the error an attempt ended with (when the worker knows it)."""
        try:
            await self.bucket.put(self.key(pool, seq), encode({**record, "error": error, "started": time.time()}))
        except TRANSIENT as exc:
            log.debug("journal error for %s.%s not stored: %s", pool, seq, exc)

    async def last(self, pool: str, seq: int) -> dict[str, Any] | None:
        """The journal entry of the last recorded attempt, if any."""
        entry = await self.bucket.get(self.key(pool, seq))
        return decode(entry[0]) if entry is not None and entry[0] else None

    async def last_error(self, pool: str, seq: int, attempts: int) -> str:
        """One line: how the last attempt of the task ended, as far as known."""
        entry = await self.last(pool, seq)
        if entry is None:
            return f"no attempt of {attempts} finished and none was journaled (max_deliver 1, or NATS was away)"
        if entry.get("error"):
            return str(entry["error"])
        where = f"attempt {entry.get('attempt')} on {entry.get('worker')} (pid {entry.get('pid')}, node {entry.get('node')})"
        how = await self.exit_of(str(entry.get("node")), int(entry.get("pid") or 0), float(entry.get("started") or 0))
        if how is None:
            return f"worker stopped answering during {where}; its exit was not recorded"
        return f"worker exited: {how} during {where}"

    async def exit_of(self, node: str, pid: int, since: float, timeout: float = 2.0) -> str | None:
        """How process ``pid`` of ``node`` ended, from the exit log (``None``: unknown)."""
        if self.exits_stream is None or not pid:
            return None
        how: str | None = None
        quota = ""
        events = subjects.node_events(node)
        try:
            replay = self.exits.replay(events, max(0.0, since - 1.0), timeout)
            async with contextlib.aclosing(replay):
                async for subject, data in replay:
                    try:
                        event = decode(data)
                    except CodecError:
                        event = None
                    if not isinstance(event, dict):  # written by someone else: not an exit record
                        log.warning("exit log: skipping a malformed record on %s", subject)
                    elif event.get("pid") == pid:
                        if event.get("kind") == "exit":
                            how = str(event.get("how") or f"exit code {event.get('code')}")
                        elif event.get("kind") == "quota":
                            quota = f" (quota {event.get('quota')} {event.get('value')} > {event.get('limit')})"
                    if how is not None:
                        break
        except BrokerClosedError:
            raise
        except BrokerError as exc:
            log.debug("exit log not readable: %s", exc)
            return None
        if how is None:
            return None
        return how if "quota" in how else how + quota

