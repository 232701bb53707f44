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
its outcome, and runs suspects one at a time with nothing beside them: the
tasks delivered to the worker and not taken yet are handed back first (a
delivery counts as an attempt even if it never ran), and a task that
arrives meanwhile, from a fetch that was under way, waits. It is
journaled as *running* just before its handler starts, so if it kills the
worker again it is the only one blamed: the others are bystanders next time.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

from config.schema import PoolConfig
from workers.delivery import Delivery, Outcome
from workers.journal import AttemptJournal
from workers.middleware import Next

log = logging.getLogger("foundation.worker")


class SuspectIsolation:
    """Classifies redeliveries and isolates suspects, for one worker (a middleware).

    Args:
        journal: the attempt journal.
        pool: the pool's config.
        worker_id, node: written into journal entries.
        in_flight: how many tasks the worker holds now.
        quiesce: makes sure no other task can arrive (the worker's work queue
            hands back what was delivered to it and not taken).
    """

    def __init__(self, journal: AttemptJournal, pool: PoolConfig, worker_id: str, node: str,
                 in_flight: Callable[[], int], quiesce: Callable[[], Awaitable[object]]) -> None:
        self.journal = journal
        self.pool = pool
        self.worker_id = worker_id
        self.node = node
        self.in_flight = in_flight
        self.quiesce = quiesce
        self.in_hand = 0  # suspects held, waiting or running: the worker fetches nothing meanwhile
        self._one_at_a_time = asyncio.Lock()
        self._changed = asyncio.Event()
        self._nobody_alone = asyncio.Event()  # cleared while a suspect runs alone
        self._nobody_alone.set()

    async def __call__(self, d: Delivery, call_next: Next) -> Outcome:
        while not self._nobody_alone.is_set():
            # A suspect runs alone; this one arrived meanwhile (a fetch that
            # was under way): it waits, so the suspect cannot take it down.
            await self._nobody_alone.wait()
        if d.attempt == 1:
            return await call_next(d)  # first deliveries are never journaled
        if not await self.classify(d):
            return await call_next(d)
        try:
            async with self._one_at_a_time:
                # Run alone: no other suspect, and no other task in hand.
                await self.quiesce()
                while self.in_flight() - self.in_hand > 0:
                    self._changed.clear()
                    await self._changed.wait()
                self._nobody_alone.clear()
                try:
                    await self.journal.started(self.pool.name, d.stream_seq, **self._record(d), running=True)
                    return await call_next(d)
                finally:
                    self._nobody_alone.set()
        finally:
            self.in_hand -= 1
            self._changed.set()

    def _record(self, d: Delivery) -> dict[str, object]:
        return {"task_id": d.task_id, "attempt": d.attempt, "worker": self.worker_id,
                "node": self.node, "pid": os.getpid()}

    async def classify(self, d: Delivery) -> bool:
        """Journal a redelivery; whether it is a suspect (then it returns after its backoff,
        counted in :attr:`in_hand`)."""
        last = await self.journal.last(self.pool.name, d.stream_seq)
        bystander = last is not None and last.get("attempt") == d.attempt - 1 and not last.get("running")
        suspect = not bystander and not (last and last.get("error"))
        await self.journal.started(self.pool.name, d.stream_seq, **self._record(d))
        if not suspect:
            return False
        d.suspect = True
        self.in_hand += 1
        # A suspect running alone waits until every other task in hand is a
        # suspect; this one just became one, which may be what it waits for.
        # Unannounced, both wait for ever: it for this one to end, this one
        # for its turn (their deliveries kept alive by heartbeats).
        self._changed.set()
        delay = self.pool.backoff_for(d.attempt - 1)
        log.info("%s: task %s attempt %d: its worker died during the last one; isolated retry in %.1fs",
                 self.worker_id, d.task_id, d.attempt, delay)
        try:
            await asyncio.sleep(delay)
        except BaseException:
            self.in_hand -= 1
            self._changed.set()
            raise
        return True

    def notify(self) -> None:
        """A task of the worker finished: an isolated suspect may be able to start."""
        self._changed.set()
