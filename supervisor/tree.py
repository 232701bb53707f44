"""The supervisor: strategies, restart types, restart intensity.

See the contract in :mod:`supervisor` (``supervisor/__init__.py``); this
module implements exactly that. A :class:`Supervisor` is itself a child, so
trees nest: the root holds nats-server and one pool supervisor per pool.

All exits are handled one at a time by a single task, in arrival order, so a
restart never interleaves with another restart or with a stop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from config.errors import SupervisorError
from supervisor.children import RESTART_TYPES, Child, ChildStartError, ExitInfo
from workers.exitcodes import EXIT_RECYCLE

log = logging.getLogger("foundation.supervisor")

STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")

EXIT_ESCALATED = 3  # restart intensity exceeded: the tree gave up
EXIT_START_FAILED = 4  # a child could not be started

EventSink = Callable[[str, dict[str, Any]], None]


class IntensityExceededError(SupervisorError):
    """More than ``max_restarts`` restarts happened within ``max_seconds``."""


class Supervisor:
    """Supervises an ordered list of children.

    Args:
        id: the supervisor's id (``root``, ``pool:echo``).
        children: started in this order, stopped in reverse.
        strategy: ``one_for_one``, ``one_for_all`` or ``rest_for_one``.
        max_restarts: restarts allowed within ``max_seconds`` ...
        max_seconds: ... before the supervisor gives up (escalates).
        restart: this supervisor's own restart type as a child of its parent.
        on_event: receives ``(kind, data)`` for start, exit, restart, escalate.
    """

    def __init__(
        self,
        id: str,
        children: list[Child],
        *,
        strategy: str = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        restart: str = "permanent",
        on_event: EventSink | None = None,
    ) -> None:
        if strategy not in STRATEGIES:
            raise SupervisorError(f"{id}: strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        if restart not in RESTART_TYPES:
            raise SupervisorError(f"{id}: restart must be one of {', '.join(RESTART_TYPES)}, got {restart!r}")
        ids = [c.id for c in children]
        if len(set(ids)) != len(ids):
            raise SupervisorError(f"{id}: child ids must be unique, got {ids}")
        self.id = id
        self.children: list[Child] = list(children)
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.restart = restart
        self.shutdown = math.inf  # a supervisor stops its children, each with its own shutdown
        self.on_event = on_event or (lambda kind, data: None)
        self.restarts: deque[float] = deque()
        self._exits: asyncio.Queue[tuple[Child, ExitInfo, asyncio.Task[None] | None]] | None = None
        self._monitors: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._done: asyncio.Future[ExitInfo] | None = None
        self._lock = asyncio.Lock()  # serializes restarts with stop/scale

    # -- the Child interface -------------------------------------------------

    @property
    def running(self) -> bool:
        return self._done is not None and not self._done.done()

    async def start(self) -> None:
        """Start every child in order; returns once all are ready.

        Raises:
            ChildStartError: a child failed; those already started were
                stopped in reverse order.
        """
        loop = asyncio.get_running_loop()
        self._exits = asyncio.Queue()
        self._done = loop.create_future()
        self.restarts.clear()
        started: list[Child] = []
        for child in self.children:
            try:
                await self._start_child(child)
            except BaseException:
                for c in reversed(started):
                    await self._stop_child(c, "start of a sibling failed")
                self._done.set_result(ExitInfo(EXIT_START_FAILED, f"{child.id} failed to start"))
                raise
            started.append(child)
        self._loop_task = asyncio.create_task(self._handle_exits(), name=f"{self.id} exits")

    async def wait(self) -> ExitInfo:
        if self._done is None:
            raise SupervisorError(f"{self.id} was never started")
        return await asyncio.shield(self._done)

    async def stop(self, reason: str = "stopped") -> ExitInfo:
        """Stop all children in reverse start order."""
        if not self.running:
            return self._done.result() if self._done is not None else ExitInfo(0, reason, True)
        async with self._lock:
            if self._loop_task is not None:
                self._loop_task.cancel()
            for child in reversed(self.children):
                await self._stop_child(child, reason)
            info = ExitInfo(0, reason, requested=True)
            if not self._done.done():
                self._done.set_result(info)
        return await self.wait()

    # -- children ------------------------------------------------------------

    def child(self, child_id: str) -> Child:
        for c in self.children:
            if c.id == child_id:
                return c
        raise SupervisorError(f"{self.id} has no child {child_id!r}")

    async def add_child(self, child: Child) -> None:
        """Append and start a child (live scale-up)."""
        async with self._lock:
            if any(c.id == child.id for c in self.children):
                raise SupervisorError(f"{self.id} already has a child {child.id!r}")
            self.children.append(child)
            await self._start_child(child)

    async def remove_child(self, child_id: str, reason: str = "removed") -> ExitInfo:
        """Stop a child (gracefully, within its shutdown) and forget it."""
        async with self._lock:
            child = self.child(child_id)
            info = await self._stop_child(child, reason)
            self.children.remove(child)
            return info

    async def restart_child(self, child_id: str, reason: str = "restart requested") -> None:
        """Stop and start one child; not counted toward restart intensity."""
        async with self._lock:
            child = self.child(child_id)
            await self._stop_child(child, reason)
            await self._start_child(child)
            self.on_event("restart", {"supervisor": self.id, "child": child.id, "reason": reason})

    async def _start_child(self, child: Child) -> None:
        await child.start()
        assert self._exits is not None
        queue = self._exits

        async def monitor() -> None:
            info = await child.wait()
            # The task identifies this run of the child: an exit queued
            # before a strategy restarted the child again is stale.
            await queue.put((child, info, asyncio.current_task()))

        self._monitors[child.id] = asyncio.create_task(monitor(), name=f"monitor {child.id}")
        self.on_event("start", {"supervisor": self.id, "child": child.id, "pid": getattr(child, "pid", None)})

    async def _stop_child(self, child: Child, reason: str) -> ExitInfo:
        # Cancel the monitor first: an exit we caused is not a failure.
        monitor = self._monitors.pop(child.id, None)
        if monitor is not None:
            monitor.cancel()
        if not child.running:
            return ExitInfo(0, reason, True)
        return await child.stop(reason)

    # -- failures ------------------------------------------------------------

    async def _handle_exits(self) -> None:
        assert self._exits is not None
        while True:
            child, info, run = await self._exits.get()
            async with self._lock:
                if self._monitors.get(child.id) is not run or child not in self.children:
                    continue  # stopped on purpose, or already restarted, meanwhile
                self._monitors.pop(child.id, None)
                try:
                    await self._on_exit(child, info)
                except (IntensityExceededError, ChildStartError) as exc:
                    await self._escalate(str(exc))
                    return

    def _wants_restart(self, child: Child, info: ExitInfo) -> bool:
        if child.restart == "temporary":
            return False
        if child.restart == "transient":
            return not info.normal
        return True

    async def _on_exit(self, child: Child, info: ExitInfo) -> None:
        self.on_event("exit", {"supervisor": self.id, "child": child.id, "code": info.code, "how": info.describe()})
        if not self._wants_restart(child, info):
            log.info("%s: %s ended (%s); not restarted (%s)", self.id, child.id, info.describe(), child.restart)
            if child.restart == "temporary":
                self.children.remove(child)
            return
        # A recycle is a replacement the child asked for (task count, age,
        # quota), not a crash: it does not count toward restart intensity.
        if info.code != EXIT_RECYCLE:
            self._count_restart(child, info)
        log.warning("%s: %s ended (%s); restarting (%s)", self.id, child.id, info.describe(), self.strategy)
        for c in self._affected(child):
            if c is not child and c.running:
                await self._stop_child(c, f"{self.strategy} after {child.id} ended")
        for c in self._affected(child, order="start"):
            self._monitors.pop(c.id, None)
            await self._restart(c, info)

    async def _restart(self, child: Child, info: ExitInfo) -> None:
        # A failed restart counts as one more restart; a fatal one (the
        # handler cannot even be imported) escalates at once instead of looping.
        while True:
            try:
                await self._start_child(child)
                break
            except ChildStartError as exc:
                if exc.fatal:
                    raise
                log.warning("%s: restart of %s failed: %s", self.id, child.id, exc)
                self._count_restart(child, exc.exit or info)
        self.on_event("restart", {"supervisor": self.id, "child": child.id, "reason": info.describe()})

    def _affected(self, child: Child, order: str = "stop") -> list[Child]:
        """Children the strategy restarts: stop order (reverse) or start order."""
        if self.strategy == "one_for_one":
            group = [child]
        elif self.strategy == "one_for_all":
            group = list(self.children)
        else:  # rest_for_one
            group = self.children[self.children.index(child):]
        return group if order == "start" else list(reversed(group))

    def _count_restart(self, child: Child, info: ExitInfo) -> None:
        now = time.monotonic()
        self.restarts.append(now)
        while self.restarts and now - self.restarts[0] > self.max_seconds:
            self.restarts.popleft()
        if len(self.restarts) > self.max_restarts:
            raise IntensityExceededError(
                f"{self.id}: more than {self.max_restarts} restarts in {self.max_seconds:g}s "
                f"(last: {child.id} {info.describe()})"
            )

    async def _escalate(self, why: str) -> None:
        log.error("%s: giving up: %s", self.id, why)
        self.on_event("escalate", {"supervisor": self.id, "reason": why})
        for c in reversed(self.children):
            await self._stop_child(c, "supervisor escalated")
        assert self._done is not None
        if not self._done.done():
            self._done.set_result(ExitInfo(EXIT_ESCALATED, why))
