"""The deliveries a worker holds, their heartbeats and their leases.

JetStream redelivers a task whose ack deadline passes. A handler that runs
longer than ``ack_wait`` is not stuck, so while a worker holds a delivery —
waiting for the agent lock, in the handler, storing the result — it sends
``in_progress`` for it every ``ack_wait / 3`` seconds (checked every
``ack_wait / 6``), which pushes the deadline back by a full ``ack_wait``.

The *lease* of a delivery is how long this worker is certain the task is
still its own: ``ack_wait`` from the moment the fetch was sent, or from the
last heartbeat known to have reached the server (a flush confirms it), minus
a safety margin. Any reconnect ends every lease for good, because the worker
cannot know what the server saw meanwhile (a restarted server may even have
forgotten the heartbeats). Stateful commits are only sent within the lease
(:mod:`workers.state`).
"""

from __future__ import annotations

import asyncio
import logging
import time

from broker import WorkQueue
from config.errors import BrokerError
from workers.delivery import Delivery

log = logging.getLogger("foundation.worker")


class InFlight:
    """Tracks deliveries and keeps them alive with heartbeats.

    Args:
        queue: the worker's work queue.
        ack_wait: the pool's ack wait, seconds.
    """

    def __init__(self, queue: WorkQueue, ack_wait: float) -> None:
        self.queue = queue
        self.nc = queue.nc  # its reconnect count and state end leases
        self.ack_wait = ack_wait
        self.interval = ack_wait / 3
        # The commit that follows a lease check must land before the deadline.
        self.margin = min(ack_wait / 4, 2.0)
        self.deliveries: set[Delivery] = set()
        self._task: asyncio.Task[None] | None = None

    def add(self, d: Delivery) -> None:
        self.deliveries.add(d)

    def remove(self, d: Delivery) -> None:
        self.deliveries.discard(d)

    def start(self) -> None:
        self._task = asyncio.create_task(self._beat(), name="heartbeats")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.interval / 2)
            now = time.monotonic()
            due = [d for d in self.deliveries if now - d.last_beat >= self.interval]
            if not due or not self.queue.is_connected:
                continue
            reconnects = self.queue.reconnects
            try:
                for d in due:
                    await self.queue.in_progress(d.msg)
                    d.last_beat = now
                # The pong proves the server processed every heartbeat before it.
                await self.queue.flush(timeout=self.margin)
            except BrokerError as exc:  # NATS went away mid-beat; the next round retries
                log.debug("heartbeat failed: %s", exc)
                continue
            for d in due:
                if d.reconnects == reconnects:
                    d.lease_start = now
