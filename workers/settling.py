"""The settling link of the chain: store the outcome's result, then settle
the message as the outcome says.

It sits inside the middleware given to the worker (metrics), so they see
the outcome once it is settled, and above dead-lettering
(:mod:`workers.middleware` gives the order). Contract:

- the result body is stored (retried until stored, by the outcome store)
  *before* the ack — confirmed, for a stateful task; a crash in between
  means a redelivery, never a loss;
- ``NAK`` naks with the outcome's delay; ``LEAVE`` leaves the message (its
  delivery may be another worker's now); an abandon caused by a
  :class:`~workers.statestore.StateError` is reported to the consume loop
  as fatal;
- an exception escaping the links below (not expected: dead-lettering
  turns failures into outcomes) is logged and the task naked for a retry;
- a cancelled task (the worker stops) is handed back with a nak and the
  cancellation goes on up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from broker import OutcomeStore, WorkQueue
from config.errors import BrokerError
from config.schema import PoolConfig
from workers.delivery import ACK, ACK_CONFIRMED, NAK, Delivery, Outcome
from workers.middleware import Next
from workers.statestore import StateError

log = logging.getLogger("foundation.worker")


class Settling:
    """The link that settles; ``on_fatal`` hears of a state error that must
    stop the worker, ``on_ok`` of each task stored and acked."""

    def __init__(self, queue: WorkQueue, outcomes: OutcomeStore, pool: PoolConfig, worker_id: str,
                 on_fatal: Callable[[BaseException], None], on_ok: Callable[[], None]) -> None:
        self.queue = queue
        self.outcomes = outcomes
        self.pool = pool
        self.worker_id = worker_id
        self.on_fatal = on_fatal
        self.on_ok = on_ok

    async def __call__(self, d: Delivery, call_next: Next) -> Outcome:
        try:
            outcome = await call_next(d)
        except asyncio.CancelledError:
            if self.queue.is_connected:
                try:
                    await self.queue.nak(d.msg)
                except BrokerError:
                    pass
            log.warning("%s: task %s handed back: %s", self.worker_id, d.task_id, d.abandon_reason or "cancelled")
            raise
        except Exception as exc:  # not expected: the dead-lettering middleware turns failures into outcomes
            log.exception("%s: task %s: the middleware chain failed; retrying it", self.worker_id, d.task_id)
            outcome = Outcome("retry", error=exc, settle=NAK, delay=self.pool.backoff_for(d.attempt))
        await self.settle(d, outcome)
        return outcome

    async def settle(self, d: Delivery, outcome: Outcome) -> None:
        """Store the outcome's result, then settle the message as it says."""
        d.settled = True
        if outcome.body is not None:
            await self.outcomes.store_result(outcome.body, d.reply_to)
        how = outcome.settle
        if how == ACK:
            await self.queue.ack(d.msg)
        elif how == ACK_CONFIRMED:
            await self.queue.ack_confirmed(d.msg, min(2.0, self.pool.ack_wait))
        elif how == NAK:
            await self.queue.nak(d.msg, outcome.delay)
        elif isinstance(outcome.error, StateError):
            self.on_fatal(outcome.error)
        else:
            log.warning("%s: task %s abandoned: %s", self.worker_id, d.task_id, outcome.error)
        if outcome.then is not None:
            outcome.then()
        if outcome.kind == "ok":
            self.on_ok()
