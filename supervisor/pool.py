"""A pool: a one_for_one supervisor of identical worker slots.

Slots are ``<pool>.0 … <pool>.<size-1>``. A slot keeps its id across restarts
(its pid changes); scaling down removes the highest slots, draining each.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from config.schema import PoolConfig
from supervisor.children import ExitInfo, ProcessChild
from supervisor.tree import EventSink, Supervisor
from workers.process import WorkerSpec, worker_main


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

    async def start(self) -> None:
        if self.prepare is not None:
            await self.prepare(self.pool)
        await super().start()

    async def scale(self, size: int) -> int:
        """Grow or shrink to ``size`` workers; returns the new size.

        Removed slots are drained: each gets SIGTERM, finishes its in-flight
        tasks within ``shutdown``, and only then is it gone.
        """
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        while self.size < size:
            used = {c.id for c in self.children}
            n = next(i for i in range(size + len(used)) if f"{self.pool.name}.{i}" not in used)
            await self.add_child(self._slot(n))
        while self.size > size:
            highest = max(self.children, key=lambda c: int(c.id.rsplit(".", 1)[1]))
            await self.remove_child(highest.id, "scaled down")
        return self.size
