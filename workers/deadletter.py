"""Dead-lettering tasks whose deliveries ran out without an outcome.

A task whose handler raises is dead-lettered by the worker itself on its
last attempt. A task whose *worker dies* on every attempt never reaches
that code: after ``max_deliver`` deliveries the server stops delivering it,
leaves it in ``TASKS``, and publishes the advisory
``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.TASKS.pool-<pool>``. Every
worker of the pool listens in one queue group; the one that gets it:

1. reads the task with ``get_msg(TASKS, seq)`` (gone: someone handled it);
2. if a stateful agent of the pool applied it after all (its state was
   stored just before the worker died), re-publishes that result;
3. otherwise stores the body on ``dlq.<pool>`` with the last error known
   (:mod:`workers.journal`) and ``Foundation-Attempts``, and an ``ok:
   false`` result;
4. deletes the task from ``TASKS`` (a work queue: nothing else removes it).

Each step is idempotent (the DLQ and the result deduplicate on the task id,
deleting twice is harmless), so a crash between steps only repeats them.

Advisories are plain NATS messages: one sent while every worker was
reconnecting is lost. A **sweep** backs them up, at start and every
:attr:`DeadLetters.interval` seconds. A message still in ``TASKS`` at or
below the consumer's ack floor, or delivered while the consumer has nothing
pending, is one whose deliveries ran out (acknowledged messages leave a work
queue). Because an ack removes its message a moment after the floor moves,
a candidate is only handled when a second sweep still finds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from broker import (
    CodecError,
    Connection,
    JetStream,
    Listener,
    OutcomeStore,
    Received,
    consumer_progress,
    decode,
    delete_message,
    get_message,
    result_body,
    subjects,
)
from config.errors import BrokerError
from config.schema import PoolConfig
from workers.journal import AttemptJournal
from workers.metrics import TASKS_DEAD
from workers.state import Applied
from workers.statestore import TRANSIENT

log = logging.getLogger("foundation.worker.deadletter")

ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
MAX_ADVISORY_TASKS = 64  # advisories handled at once; more wait for the sweep
SWEEP_BATCH = 100  # candidates examined per sweep

FindApplied = Callable[[str], Awaitable[Applied | None]]


def advisory_subject(pool: str) -> str:
    return f"{ADVISORY}.{subjects.TASKS_STREAM}.{subjects.consumer(pool)}"


async def delete_task(js: JetStream, seq: int) -> None:
    """Remove a task from ``TASKS`` by sequence; already gone is fine."""
    await delete_message(js, subjects.TASKS_STREAM, seq)


class DeadLetters:
    """Advisory listener and sweeper of one pool, inside one worker.

    Args:
        nc, js: the worker's connection.
        pool: the pool's config.
        worker_id: the slot id, written into the ``ok: false`` results.
        outcomes: stores dead letters and results.
        journal: explains how the last attempt ended.
        find_applied: looks a task id up in the agent states of the pool
            (``None`` for a stateless pool).
    """

    def __init__(
        self,
        nc: Connection,
        js: JetStream,
        pool: PoolConfig,
        worker_id: str,
        outcomes: OutcomeStore,
        journal: AttemptJournal,
        find_applied: FindApplied | None = None,
    ) -> None:
        self.nc = nc
        self.js = js
        self.pool = pool
        self.worker_id = worker_id
        self.outcomes = outcomes
        self.journal = journal
        self.find_applied = find_applied
        self.interval = max(2.0, min(30.0, 2 * pool.ack_wait))
        self.handled = 0
        self._suspects: set[int] = set()
        self._busy: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listener: Listener | None = None

    async def start(self) -> None:
        """Listen for advisories (one worker of the pool gets each) and sweep."""
        self._listener = await Listener.start(
            self.nc, advisory_subject(self.pool.name), self._on_advisory, queue=f"foundation-dlq-{self.pool.name}"
        )
        self._spawn(self._sweep_loop())

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_advisory(self, msg: Received) -> None:
        try:
            event = decode(msg.data)
            seq, deliveries = int(event["stream_seq"]), int(event.get("deliveries") or self.pool.max_deliver)
        except (CodecError, ValueError, KeyError, TypeError, OverflowError) as exc:
            log.warning("ignoring a malformed max-deliveries advisory on %s: %s", msg.subject, exc)
            return
        if not 0 < seq < 2**63 or len(self._tasks) >= MAX_ADVISORY_TASKS:
            # Out of range, or a flood: the sweep finds every real dead letter anyway.
            log.warning("ignoring a max-deliveries advisory on %s (seq %d, %d in hand)", msg.subject, seq,
                        len(self._tasks))
            return
        self._spawn(self._handle_retrying(seq, deliveries))

    async def _handle_retrying(self, seq: int, deliveries: int) -> None:
        delay = 0.1
        while True:
            try:
                await self.handle(seq, deliveries)
                return
            except TRANSIENT as exc:
                # Leave it for now; the sweep finds it again if this never succeeds.
                log.warning("dead-lettering task seq %d failed (%s); retrying", seq, type(exc).__name__)
                if delay > 5:
                    return
                await asyncio.sleep(delay)
                delay *= 2

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except (BrokerError, *TRANSIENT) as exc:
                log.debug("sweep failed: %s", exc)
            await asyncio.sleep(self.interval)

    async def sweep(self) -> list[int]:
        """One sweep; the stream sequences it dead-lettered."""
        progress = await consumer_progress(self.js, subjects.TASKS_STREAM, subjects.consumer(self.pool.name))
        limit = progress.delivered if progress.ack_pending == 0 else progress.ack_floor
        candidates: list[int] = []
        seq = 1
        while limit and len(candidates) < SWEEP_BATCH:
            msg = await get_message(self.js, subjects.TASKS_STREAM, seq, subject=subjects.tasks(self.pool.name), next=True)
            if msg is None or msg.seq > limit:
                break
            candidates.append(msg.seq)
            seq = msg.seq + 1
        confirmed = [c for c in candidates if c in self._suspects]
        self._suspects = set(candidates) - set(confirmed)
        done = []
        for c in confirmed:
            if await self.handle(c, self.pool.max_deliver):
                done.append(c)
        return done

    async def handle(self, seq: int, deliveries: int) -> bool:
        """Dead-letter the task at ``seq`` (if still there); whether this call did."""
        if seq in self._busy:
            return False
        self._busy.add(seq)
        try:
            return await self._handle(seq, deliveries)
        finally:
            self._busy.discard(seq)

    async def _handle(self, seq: int, deliveries: int) -> bool:
        msg = await get_message(self.js, subjects.TASKS_STREAM, seq)
        if msg is None or msg.subject != subjects.tasks(self.pool.name):
            return False
        headers = msg.headers
        task_id = headers.get(subjects.MSG_ID) or subjects.default_task_id(seq)
        reply_to = headers.get(subjects.REPLY_TO)
        applied = await self.find_applied(task_id) if self.find_applied is not None else None
        if applied is not None:
            # Its effects were stored just before its worker died: it did complete.
            await applied.stored
            if applied.result is not None:
                await self.outcomes.store_result(applied.result, reply_to)
            await delete_task(self.js, seq)
            log.warning("task %s ran out of deliveries after it was applied; result re-published", task_id)
            return True
        error = await self.journal.last_error(self.pool.name, seq, deliveries)
        await self.outcomes.dead_letter(msg.data, task_id=task_id, error=error, attempts=deliveries)
        body = result_body(
            task_id=task_id, pool=self.pool.name, worker=self.worker_id, attempt=deliveries,
            duration_ms=0.0, error=error,
        )
        await self.outcomes.store_result(body, reply_to)
        await delete_task(self.js, seq)
        self.handled += 1
        TASKS_DEAD.labels(self.pool.name, "worker_died").inc()
        log.warning("task %s dead-lettered after %d deliveries: %s", task_id, deliveries, error)
        return True
