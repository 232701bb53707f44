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

# Why a child was restarted: the ``cause`` of a restart event and the
# ``reason`` label of the restarts metric (a small, fixed set).
CAUSES = ("exit", "signal", "recycle", "quota", "sibling", "requested")

EventSink = Callable[[str, dict[str, Any]], None]


class IntensityExceededError(SupervisorError):
    """More than ``max_restarts`` restarts happened within ``max_seconds``."""


def exit_cause(info: ExitInfo) -> str:
    """The restart cause of an unplanned exit: ``recycle``, ``signal`` or ``exit``."""
    if info.code == EXIT_RECYCLE:
        return "recycle"
    return "signal" if info.code < 0 else "exit"


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
        # Children being replaced on purpose (quota): child id -> (cause, reason).
        self._replacing: dict[str, tuple[str, str]] = {}
        self._background: set[asyncio.Task[Any]] = set()

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
        self._replacing.clear()
        started: list[Child] = []
        for child in self.children:
            if not self._should_start(child):
                continue
            try:
                await self._start_child(child)
            except BaseException:
                for c in reversed(started):
                    await self._stop_child(c, "start of a sibling failed")
                self._done.set_result(ExitInfo(EXIT_START_FAILED, f"{child.id} failed to start"))
                raise
            started.append(child)
        self._loop_task = asyncio.create_task(self._handle_exits(), name=f"{self.id} exits")

    def _should_start(self, child: Child) -> bool:
        """Whether ``start()`` starts this child (a drained pool starts none)."""
        return True

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
            await self._stop_all(reason)
            for task in list(self._background):
                task.cancel()
            info = ExitInfo(0, reason, requested=True)
            if not self._done.done():
                self._done.set_result(info)
        return await self.wait()

    async def _stop_all(self, reason: str) -> None:
        """Stop every child, one at a time, in reverse start order."""
        for child in reversed(self.children):
            await self._stop_child(child, reason)

    async def settled(self) -> None:
        """Wait until every exit that has been reported is fully handled.

        Once it returns, the restarts (or escalation) that those exits call
        for are done: an observer can compare pids without racing them.
        """
        if self._exits is None or self._done is None:
            return
        # An escalation ends the exit loop with exits still queued: stop
        # waiting then too.
        joined = asyncio.ensure_future(self._exits.join())
        await asyncio.wait({joined, self._done}, return_when=asyncio.FIRST_COMPLETED)
        joined.cancel()

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
            try:
                await self._start_child(child)
            except BaseException:
                self.children.remove(child)
                raise

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
            self._restarted(child, "requested", reason)

    def replace_child(self, child_id: str, reason: str, cause: str = "quota") -> bool:
        """Gracefully replace a running child without holding up the tree.

        The child gets SIGTERM, drains within its ``shutdown`` (SIGKILL only if
        stuck), and its exit is then restarted like any other, except that it
        is restarted whatever its restart type (unless ``temporary``) and not
        counted toward restart intensity: the supervisor chose to replace it.

        Returns:
            False when the child is not running or is already being replaced.
        """
        child = self.child(child_id)
        if not child.running or child_id in self._replacing:
            return False
        self._replacing[child_id] = (cause, reason)
        task = asyncio.create_task(child.stop(reason), name=f"replace {child_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return True

    def kill_child(self, child_id: str, reason: str) -> bool:
        """SIGKILL a child's process group at once (it endangers the host).

        Unlike :meth:`replace_child` the exit counts toward restart intensity:
        a child that has to be killed failed. Returns False if not running.
        """
        child = self.child(child_id)
        kill = getattr(child, "kill", None)
        if not child.running or kill is None:
            return False
        self._replacing.pop(child_id, None)
        kill(reason)
        return True

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
        self._replacing.pop(child.id, None)
        if not child.running:
            return ExitInfo(0, reason, True)
        return await child.stop(reason)

    def _restarted(self, child: Child, cause: str, reason: str) -> None:
        self.on_event("restart", {"supervisor": self.id, "child": child.id, "cause": cause, "reason": reason,
                                  "pid": getattr(child, "pid", None)})

    # -- failures ------------------------------------------------------------

    async def _handle_exits(self) -> None:
        assert self._exits is not None
        while True:
            child, info, run = await self._exits.get()
            try:
                async with self._lock:
                    if self._monitors.get(child.id) is not run or child not in self.children:
                        continue  # stopped on purpose, or already restarted, meanwhile
                    self._monitors.pop(child.id, None)
                    try:
                        await self._on_exit(child, info)
                    except (IntensityExceededError, ChildStartError) as exc:
                        await self._escalate(str(exc))
                        return
            finally:
                self._exits.task_done()

    def _wants_restart(self, child: Child, info: ExitInfo, replaced: bool) -> bool:
        if child.restart == "temporary":
            return False
        if child.restart == "transient" and not replaced:
            return not info.normal
        return True

    async def _on_exit(self, child: Child, info: ExitInfo) -> None:
        replacing = self._replacing.pop(child.id, None)
        restart = self._wants_restart(child, info, replacing is not None)
        self.on_event("exit", {
            "supervisor": self.id, "child": child.id, "pid": getattr(child, "pid", None),
            "code": info.code if info.code >= 0 else None, "signal": info.signal_name,
            "how": info.describe(), "restart": restart,
        })
        if not restart:
            log.info("%s: %s ended (%s); not restarted (%s)", self.id, child.id, info.describe(), child.restart)
            if child.restart == "temporary":
                self.children.remove(child)
            return
        # A recycle is a replacement the child asked for (task count, age), a
        # replacement is one the supervisor chose (quota): neither is a crash,
        # so neither counts toward restart intensity.
        if replacing is not None:
            cause, reason = replacing
        else:
            cause, reason = exit_cause(info), info.describe()
            if cause != "recycle":
                self._count_restart(child, info)
        log.warning("%s: %s ended (%s); restarting (%s)", self.id, child.id, info.describe(), self.strategy)
        group = self._affected(child)
        for c in reversed(group):
            if c is not child and c.running:
                await self._stop_child(c, f"{self.strategy} after {child.id} ended")
        for c in group:
            if c is not child and c.restart == "temporary":
                # OTP: a temporary child is never restarted, not even when a
                # sibling's exit takes it down; it is simply gone.
                self.children.remove(c)
                continue
            self._monitors.pop(c.id, None)
            if c is child:
                await self._restart(c, info, cause, reason)
            else:
                await self._restart(c, info, "sibling", f"{self.strategy} after {child.id} ended")

    async def _restart(self, child: Child, info: ExitInfo, cause: str, reason: str) -> None:
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
        self._restarted(child, cause, reason)

    def _affected(self, child: Child) -> list[Child]:
        """The children the strategy restarts, in start order."""
        if self.strategy == "one_for_one":
            return [child]
        if self.strategy == "one_for_all":
            return list(self.children)
        return self.children[self.children.index(child):]  # rest_for_one

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
        await self._stop_all("supervisor escalated")
        assert self._done is not None
        if not self._done.done():
            self._done.set_result(ExitInfo(EXIT_ESCALATED, why))
