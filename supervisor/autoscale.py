"""Autoscaling a pool between ``min_size`` and ``max_size`` from consumer lag.

Enabled for a pool whose ``max_size`` is set. Every :data:`INTERVAL` seconds
the supervisor reads the pool's consumer (tasks waiting, tasks in flight) and
computes the *load*: backlog per unit of capacity,
``(pending + ack_pending) / (size × concurrency)``.

Hysteresis, so a pool does not flap:

* **up** when the load stays above :data:`UP_LOAD` for :data:`UP_AFTER`
  consecutive samples: straight to the size that would bring the load to 1
  (capped at ``max_size``);
* **down** by one worker when the load stays below :data:`DOWN_LOAD` for
  :data:`DOWN_AFTER` consecutive samples (the removed worker is drained);
* after any change, the counts start over.

A pool scaled to zero (``min_size = 0``) has no capacity: any waiting task
counts as an overload, so the first tasks bring it back.

The consumer is shared by every node running the pool, so each node sees the
whole backlog against its own capacity: several autoscaling nodes grow
together (each up to its ``max_size``) and shrink together once idle.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("foundation.autoscale")

INTERVAL = 1.0  # seconds between lag samples
UP_LOAD = 1.0  # more backlog than the pool can hold in flight
UP_AFTER = 2  # samples
DOWN_LOAD = 0.25  # three quarters of the capacity idle
DOWN_AFTER = 10  # samples: shrink slowly, grow fast


@dataclass
class AutoscalePolicy:
    """Pure sizing decisions; fed one lag sample at a time.

    Args:
        min_size: lower bound (0 allowed: scale to zero when idle).
        max_size: upper bound.
        concurrency: in-flight tasks per worker.
    """

    min_size: int
    max_size: int
    concurrency: int
    up_load: float = UP_LOAD
    up_after: int = UP_AFTER
    down_load: float = DOWN_LOAD
    down_after: int = DOWN_AFTER
    _high: int = 0
    _low: int = 0

    def decide(self, size: int, pending: int, in_flight: int) -> int:
        """The size the pool should have after this sample."""
        backlog = pending + in_flight
        capacity = size * self.concurrency
        load = backlog / capacity if capacity else (math.inf if backlog else 0.0)
        if size < self.min_size:
            return self._changed(self.min_size)
        if size > self.max_size:
            return self._changed(self.max_size)
        self._high = self._high + 1 if load > self.up_load else 0
        self._low = self._low + 1 if load < self.down_load else 0
        if self._high >= self.up_after and size < self.max_size:
            wanted = math.ceil(backlog / self.concurrency)
            return self._changed(min(self.max_size, max(size + 1, wanted)))
        if self._low >= self.down_after and size > self.min_size:
            return self._changed(size - 1)
        return size

    def _changed(self, size: int) -> int:
        self._high = self._low = 0
        return size


class Autoscaler:
    """Runs an :class:`AutoscalePolicy` against one pool.

    Args:
        pool: the :class:`supervisor.pool.PoolSupervisor`.
        lag: returns ``(pending, ack_pending)`` of the pool's consumer.
        on_scale: told the new size after each change.
        interval: seconds between samples.
    """

    def __init__(
        self,
        pool: Any,
        lag: Callable[[], Awaitable[tuple[int, int]]],
        on_scale: Callable[[int], None] | None = None,
        interval: float = INTERVAL,
        policy: AutoscalePolicy | None = None,
    ) -> None:
        cfg = pool.pool
        self.pool = pool
        self.lag = lag
        self.on_scale = on_scale or (lambda size: None)
        self.interval = interval
        self.policy = policy or AutoscalePolicy(cfg.min_size, cfg.max_size, cfg.concurrency)

    async def run(self) -> None:
        """Sample and resize until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.step()
            except Exception as exc:  # NATS away, pool restarting: try again next time
                log.warning("autoscaling %s skipped a sample: %s", self.pool.pool.name, exc)

    async def step(self) -> int:
        """One sample and, if the policy says so, one resize; the size after it."""
        if self.pool.drained or not self.pool.running:
            return self.pool.size
        pending, in_flight = await self.lag()
        size = self.pool.size
        wanted = self.policy.decide(size, pending, in_flight)
        if wanted != size:
            log.info("autoscaling %s: %d -> %d (pending %d, in flight %d)", self.pool.pool.name, size, wanted, pending, in_flight)
            await self.pool.scale(wanted)
            size = self.pool.size
            self.on_scale(size)
        return size
