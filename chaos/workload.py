"""The workload generator: unique task ids, each publish outcome recorded.

Publishes go out as JetStream requests, at most ``window`` awaiting their
acks at once, each with its own timeout, so an outage turns publishes into
``unknown`` or ``failed`` records instead of stalling the run.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from broker import (
    ConnectionClosedError,
    JetStream,
    JetStreamAPIError,
    NoRespondersError,
    OutboundBufferFullError,
    ReconnectingError,
    encode,
    subjects,
)
from chaos.history import ACKED, FAILED, UNKNOWN, History, PublishRecord

# Raised before anything was sent, or a definite "not stored" from the server.
_FAILED = (
    ConnectionClosedError,
    ReconnectingError,
    OutboundBufferFullError,
    NoRespondersError,
    JetStreamAPIError,
)


def classify(exc: BaseException) -> str:
    """The publish outcome an exception means: ``failed`` or ``unknown``."""
    return FAILED if isinstance(exc, _FAILED) else UNKNOWN


class Workload:
    """Publishes ``n`` tasks with ids ``<run_id>-<i>`` to ``tasks.<pool>``.

    Args:
        js: JetStream context of the publishing client.
        pool: the pool the tasks go to.
        n: how many tasks.
        payload: builds the body of task ``i``.
        window: publishes awaiting their ack at once.
        timeout: seconds a publish waits for its ack before it is ``unknown``.
        run_id: prefix of the ids (default: random).
    """

    def __init__(
        self,
        js: JetStream,
        pool: str,
        n: int,
        *,
        payload: Callable[[int], Any] = lambda i: {"i": i},
        window: int = 256,
        timeout: float = 5.0,
        run_id: str | None = None,
    ) -> None:
        self.js = js
        self.pool = pool
        self.n = n
        self.payload = payload
        self.window = window
        self.timeout = timeout
        self.run_id = run_id or uuid.uuid4().hex[:10]
        self.history = History()
        self.published = 0  # publishes that got an outcome so far
        self.started = 0.0
        self.finished = 0.0
        # time.perf_counter() of each publish's send and outcome, for the timeline.
        self.sent: dict[str, float] = {}
        self.answered: dict[str, float] = {}

    def task_id(self, i: int) -> str:
        return f"{self.run_id}-{i}"

    async def _publish(self, i: int, slots: asyncio.Semaphore) -> None:
        task_id = self.task_id(i)
        self.sent[task_id] = time.perf_counter()
        try:
            ack = await self.js.publish(
                subjects.tasks(self.pool), encode(self.payload(i)), timeout=self.timeout,
                headers={subjects.MSG_ID: task_id},
            )
            record = PublishRecord(task_id, ACKED, seq=ack.seq)
        except Exception as exc:  # every failure is recorded, none is fatal to the run
            record = PublishRecord(task_id, classify(exc), error=f"{type(exc).__name__}: {exc}")
        finally:
            slots.release()
        self.answered[task_id] = time.perf_counter()
        self.history.add(record)
        self.published += 1

    async def run(self, pace: Callable[[int], Any] | None = None) -> History:
        """Publish every task; returns the history once each has an outcome.

        Args:
            pace: awaited (if it returns an awaitable) before task ``i`` is
                published, to spread the workload over a run.
        """
        slots = asyncio.Semaphore(self.window)
        pending: set[asyncio.Task[None]] = set()
        self.started = time.monotonic()
        for i in range(self.n):
            if pace is not None:
                waited = pace(i)
                if asyncio.iscoroutine(waited):
                    await waited
            await slots.acquire()
            task = asyncio.create_task(self._publish(i, slots))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending)
        self.finished = time.monotonic()
        return self.history
