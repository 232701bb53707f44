"""Dead-lettering and retries: the middleware that decides what a failure means.

For each delivery, around the rest of the chain:

1. decode the body; a body that is not JSON or is over ``max_body_bytes``
   goes to the DLQ at once (retrying cannot fix it): outcome ``invalid``;
2. an exception from below (the handler, a time limit, or a middleware —
   the last is logged with its traceback) is a failed attempt: on an attempt
   before ``max_deliver``, the journal records the error (so the next attempt
   knows this one did not die, :mod:`workers.suspects`) and the task is
   naked with the pool's ``backoff``: outcome ``retry``; on the last, the
   original body goes to ``dlq.<pool>`` with the reason headers and an
   ``ok: false`` result is stored before the ack: outcome ``exhausted``;
3. a delivery the worker may no longer own (:class:`~workers.state.TaskAbandoned`)
   or an agent state that can no longer be stored (:class:`~workers.statestore.StateError`)
   is not a failed attempt: outcome ``abandoned``, left unsettled for redelivery.
"""

from __future__ import annotations

import logging
import os
import time

from broker import CodecError, OutcomeStore, decode, error_line, result_body
from config.schema import PoolConfig
from workers.delivery import ACK, LEAVE, NAK, Delivery, Outcome
from workers.journal import AttemptJournal
from workers.middleware import Next
from workers.state import TaskAbandoned
from workers.statestore import StateError

log = logging.getLogger("foundation.worker")


class DeadLettering:
    """Decoding, retries with backoff, and the DLQ, for one worker.

    Args:
        pool: the pool's config.
        worker_id, node: who dead-letters (result bodies, journal entries).
        outcomes: stores dead letters.
        journal: records the errors of attempts that will be retried.
    """

    def __init__(self, pool: PoolConfig, worker_id: str, node: str, outcomes: OutcomeStore,
                 journal: AttemptJournal | None) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self.node = node
        self.outcomes = outcomes
        self.journal = journal
        self.log = logging.getLogger(f"foundation.worker.{worker_id}")

    async def __call__(self, d: Delivery, call_next: Next) -> Outcome:
        try:
            d.payload = decode(d.msg.data, self.pool.max_body_bytes)
        except CodecError as exc:
            return await self.dead_letter(d, exc, "invalid")
        try:
            return await call_next(d)
        except (TaskAbandoned, StateError) as exc:
            return Outcome("abandoned", error=exc, settle=LEAVE)
        except Exception as exc:
            if exc is not d.failure:
                log.exception("%s: a middleware failed on task %s (attempt %d)", self.worker_id, d.task_id, d.attempt)
            return await self.failed(d, exc)

    async def failed(self, d: Delivery, exc: BaseException) -> Outcome:
        """A failed attempt: retry with backoff, or dead-letter on the last one."""
        seconds = d.seconds
        if d.attempt >= self.pool.max_deliver:
            outcome = await self.dead_letter(d, exc, "exhausted")
            outcome.handler_seconds = seconds
            return outcome
        if self.journal is not None:
            await self.journal.failed(self.pool.name, d.stream_seq, error_line(exc), task_id=d.task_id,
                                      attempt=d.attempt, worker=self.worker_id, node=self.node, pid=os.getpid())
        return Outcome("retry", error=exc, handler_seconds=seconds, settle=NAK,
                       delay=self.pool.backoff_for(d.attempt))

    async def dead_letter(self, d: Delivery, exc: BaseException, kind: str) -> Outcome:
        """Store the original body on ``dlq.<pool>``; the outcome stores an ``ok: false`` result, then acks."""
        error = error_line(exc)
        await self.outcomes.dead_letter(d.msg.data, task_id=d.task_id, error=error, attempts=d.attempt)
        body = result_body(
            task_id=d.task_id, pool=d.pool, worker=self.worker_id, attempt=d.attempt,
            duration_ms=(time.perf_counter() - d.started) * 1000, error=error,
        )
        self.log.warning("task %s dead-lettered after %d attempt(s): %s", d.task_id, d.attempt, error)
        return Outcome(kind, error=exc, body=body, settle=ACK)  # type: ignore[arg-type]
