"""A pool: a one_for_one supervisor of identical worker slots.

Slots are ``<pool>.0 … <pool>.<size-1>``. A slot keeps its id across restarts
(its pid changes); scaling up takes the lowest free numbers, scaling down
removes the highest slots, draining each first.

Draining a pool stops every worker gracefully at once (SIGTERM: stop
fetching, finish the tasks in hand, exit; SIGKILL only past ``shutdown``) and
keeps the slots stopped — also across a restart of the pool by its parent —
until :meth:`PoolSupervisor.resume`. Tasks published meanwhile wait in the
stream (or go to another node's workers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from config.errors import SupervisorError
from config.schema import PoolConfig
from supervisor.children import Child, ExitInfo, ProcessChild
from supervisor.tree import EventSink, Supervisor
from workers.process import WorkerSpec, worker_main


class PoolDrainedError(SupervisorError):
    """The pool is drained: resume it before scaling or restarting it."""


class PoolSupervisor(Supervisor):
    """Supervises the workers of one pool, with the pool's own intensity.

    Args:
        pool: its config.
        spec_for: builds the :class:`WorkerSpec` of a slot at each start.
        prepare: awaited before the workers start (declares the consumer).
        on_event: lifecycle events sink.
        on_exit: called on every worker process exit.
    """

    def __init__(
        self,
        pool: PoolConfig,
        *,
        spec_for: Callable[[str], WorkerSpec],
        prepare: Callable[[PoolConfig], Awaitable[None]] | None = None,
        on_event: EventSink | None = None,
        on_exit: Callable[[ProcessChild, int, ExitInfo], None] | None = None,
    ) -> None:
        self.pool = pool
        self.spec_for = spec_for
        self.prepare = prepare
        self.on_exit = on_exit
        self.drained = False
        super().__init__(
            f"pool:{pool.name}",
            [self._slot(i) for i in range(pool.size)],
            strategy="one_for_one",
            max_restarts=pool.max_restarts,
            max_seconds=pool.max_seconds,
            on_event=on_event,
        )

    def _slot(self, n: int) -> ProcessChild:
        slot = f"{self.pool.name}.{n}"
        return ProcessChild(
            slot,
            worker_main,
            lambda: (self.spec_for(slot),),
            restart=self.pool.restart,
            shutdown=self.pool.shutdown,
            on_exit=self.on_exit,
        )

    @property
    def size(self) -> int:
        return len(self.children)

    @property
    def workers(self) -> list[ProcessChild]:
        return [c for c in self.children if isinstance(c, ProcessChild)]

    @property
    def running_count(self) -> int:
        return sum(1 for c in self.workers if c.running)

    async def start(self) -> None:
        if self.prepare is not None:
            await self.prepare(self.pool)
        await super().start()

    async def _stop_all(self, reason: str) -> None:
        # Like OTP's simple_one_for_one: the workers are identical and
        # independent, so they drain all at once; one after another, a node's
        # stop would take size x shutdown.
        await asyncio.gather(*(self._stop_child(c, reason) for c in self.children))

    def _should_start(self, child: Child) -> bool:
        return not self.drained

    async def scale(self, size: int) -> dict[str, ExitInfo]:
        """Grow or shrink to ``size`` workers, live.

        New slots take the lowest free numbers. Removed slots, the highest
        numbers, are drained all at once: each gets SIGTERM, finishes its
        in-flight tasks within ``shutdown``, and only then is it gone.

        Returns:
            How each removed worker ended (empty when growing).

        Raises:
            PoolDrainedError: the pool is drained.
        """
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self._check_not_drained("scale")
        removed: dict[str, ExitInfo] = {}
        while self.size < size:
            used = {c.id for c in self.children}
            n = next(i for i in range(size + len(used)) if f"{self.pool.name}.{i}" not in used)
            await self.add_child(self._slot(n))
        if self.size > size:
            async with self._lock:
                by_number = sorted(self.children, key=lambda c: int(c.id.rsplit(".", 1)[1]), reverse=True)
                going = by_number[: self.size - size]
                # Drained all at once: removing n workers takes one shutdown, not n.
                infos = await asyncio.gather(*(self._stop_child(c, "scaled down") for c in going))
                for child, info in zip(going, infos, strict=True):
                    self.children.remove(child)
                    removed[child.id] = info
        return removed

    async def restart_child(self, child_id: str, reason: str = "restart requested") -> None:
        self._check_not_drained("restart")
        await super().restart_child(child_id, reason)

    async def drain(self, reason: str = "drained") -> dict[str, ExitInfo]:
        """Stop every worker gracefully, all at once, and keep them stopped.

        Returns:
            How each worker that was running ended (exit 0 when it drained
            within ``shutdown``, SIGKILL when it was stuck).
        """
        async with self._lock:
            self.drained = True
            running = [c for c in self.workers if c.running]
            infos = await asyncio.gather(*(self._stop_child(c, reason) for c in running))
        self.on_event("drain", {"supervisor": self.id, "pool": self.pool.name, "workers": [c.id for c in running]})
        return {c.id: info for c, info in zip(running, infos, strict=True)}

    async def resume(self) -> list[str]:
        """Start the workers of a drained pool again, in slot order; their ids."""
        async with self._lock:
            self.drained = False
            started = []
            if self.running:
                for child in self.children:
                    if not child.running:
                        await self._start_child(child)
                        started.append(child.id)
        self.on_event("resume", {"supervisor": self.id, "pool": self.pool.name, "workers": started})
        return started

    def _check_not_drained(self, what: str) -> None:
        if self.drained:
            raise PoolDrainedError(f"pool {self.pool.name} is drained; resume it before {what} (foundation resume {self.pool.name})")
