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
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg

from workers.middleware import Task

log = logging.getLogger("foundation.worker")


@dataclass(eq=False)
class Delivery:
    """One delivery of a task to this worker."""

    msg: Msg
    task: Task
    lease_start: float  # time.monotonic() when the fetch (or last confirmed heartbeat) was sent
    reconnects: int  # the client's reconnect count when the lease started
    tracker: "InFlight" = field(repr=False)
    last_beat: float = 0.0
    past_lock: bool = False  # a stateful task that is done with the agent lock
    suspect: bool = False  # its last attempt died with its worker (workers.suspects)
    abandon_reason: str = ""

    def lease_remaining(self) -> float:
        """Seconds the delivery is certainly still ours (<= 0: maybe not)."""
        t = self.tracker
        if t.nc.stats["reconnects"] != self.reconnects or not t.nc.is_connected:
            return 0.0
        return self.lease_start + t.ack_wait - t.margin - time.monotonic()

    def lease_valid(self) -> bool:
        return self.lease_remaining() > 0


class InFlight:
    """Tracks deliveries and keeps them alive with heartbeats.

    Args:
        nc: the worker's connection.
        ack_wait: the pool's ack wait, seconds.
    """

    def __init__(self, nc: Client, ack_wait: float) -> None:
        self.nc = nc
        self.ack_wait = ack_wait
        self.interval = ack_wait / 3
        # The commit that follows a lease check must land before the deadline.
        self.margin = min(ack_wait / 4, 2.0)
        self.deliveries: set[Delivery] = set()
        self._task: asyncio.Task[None] | None = None

    def add(self, msg: Msg, task: Task, fetched_at: float, reconnects: int) -> Delivery:
        d = Delivery(msg, task, fetched_at, reconnects, self, last_beat=fetched_at)
        self.deliveries.add(d)
        return d

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
            if not due or not self.nc.is_connected:
                continue
            reconnects = self.nc.stats["reconnects"]
            try:
                for d in due:
                    await d.msg.in_progress()
                    d.last_beat = now
                # The pong proves the server processed every heartbeat before it.
                await self.nc.flush(timeout=self.margin)
            except Exception as exc:  # NATS went away mid-beat; the next round retries
                log.debug("heartbeat failed: %s", exc)
                continue
            for d in due:
                if d.reconnects == reconnects:
                    d.lease_start = now
