"""Redelivered tasks whose last attempt died with its worker: suspects.

When a worker dies, every task it held comes back — the one that killed it
and the innocent ones that merely shared the process. Run together again,
the poison would take the innocent ones down with it on every attempt, and
they would all reach the DLQ. So a redelivered task is classified from the
attempt journal (:mod:`workers.journal`) before it runs:

* its last attempt ended in a handler error (journaled with the nak):
  an ordinary retry, already delayed by the nak;
* its last attempt was received but its handler never started (it only
  shared a worker that died): a **bystander**, run at once like any task;
* otherwise (its handler was running when the worker died, or nothing is
  known — first attempts are not journaled): a **suspect**.

A suspect waits the pool's ``backoff`` for its attempt (the delay a nak
would have given it; its heartbeats keep it meanwhile), then runs
**isolated**: the worker stops fetching, lets every other task in hand reach
its outcome, and runs suspects one at a time with nothing beside them. It is
journaled as *running* just before its handler starts, so if it kills the
worker again it is the only one blamed: the others are bystanders next time.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from config.schema import PoolConfig
from workers.inflight import Delivery
from workers.journal import AttemptJournal

log = logging.getLogger("foundation.worker")


class Suspects:
    """Classifies redeliveries and isolates suspects, for one worker.

    Args:
        journal: the attempt journal.
        pool: the pool's config.
        worker_id, node: written into journal entries.
    """

    def __init__(self, journal: AttemptJournal, pool: PoolConfig, worker_id: str, node: str) -> None:
        self.journal = journal
        self.pool = pool
        self.worker_id = worker_id
        self.node = node
        self.in_hand = 0  # suspects held, waiting or running
        self._one_at_a_time = asyncio.Lock()
        self._changed = asyncio.Event()

    def _record(self, d: Delivery) -> dict[str, object]:
        return {"task_id": d.task.task_id, "attempt": d.task.attempt, "worker": self.worker_id,
                "node": self.node, "pid": os.getpid()}

    async def classify(self, d: Delivery) -> None:
        """Journal a redelivery and set ``d.suspect``; a suspect returns after its backoff.

        A suspect counts in :attr:`in_hand` from here until :meth:`release`.
        """
        task = d.task
        last = await self.journal.last(self.pool.name, task.stream_seq)
        bystander = (
            last is not None and last.get("attempt") == task.attempt - 1 and not last.get("running")
        )
        suspect = not bystander and not (last and last.get("error"))
        await self.journal.started(self.pool.name, task.stream_seq, **self._record(d))
        if suspect:
            d.suspect = True
            self.in_hand += 1
            delay = self.pool.backoff_for(task.attempt - 1)
            log.info("%s: task %s attempt %d: its worker died during the last one; isolated retry in %.1fs",
                     self.worker_id, task.task_id, task.attempt, delay)
            await asyncio.sleep(delay)

    def release(self) -> None:
        """A suspect is done (whatever its outcome)."""
        self.in_hand -= 1
        self._changed.set()

    def notify(self) -> None:
        """A task of the worker finished: an isolated suspect may be able to start."""
        self._changed.set()

    @asynccontextmanager
    async def isolated(self, d: Delivery, others_in_hand: Callable[[], int]) -> AsyncIterator[None]:
        """Run a suspect alone: no other suspect, and no other task in hand."""
        async with self._one_at_a_time:
            while others_in_hand() > 0:
                self._changed.clear()
                await self._changed.wait()
            await self.journal.started(self.pool.name, d.task.stream_seq, **self._record(d), running=True)
            yield
