"""Helpers for tests that watch a running node over NATS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psutil

from broker import decode, subjects
from supervisor.control import request


class EventLog:
    """Every lifecycle event of a node, from ``foundation.events.<node>.>``.

    Subscribe (``await EventLog.open(nc)``) before starting the node.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.subjects: list[str] = []
        self._changed = asyncio.Event()
        self._sub: Any = None

    @classmethod
    async def open(cls, nc: Any, node: str = "test") -> "EventLog":
        log = cls()

        async def on_msg(msg: Any) -> None:
            log.subjects.append(msg.subject)
            log.events.append(decode(msg.data))
            log._changed.set()

        log._sub = await nc.subscribe(subjects.events(node), cb=on_msg)
        await nc.flush()
        return log

    def of(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == kind and all(e.get(k) == v for k, v in match.items())]

    async def wait(self, kind: str, count: int = 1, timeout: float = 30.0, **match: Any) -> dict[str, Any]:
        """The ``count``-th event of ``kind`` whose fields equal ``match``."""

        async def until() -> dict[str, Any]:
            while len(self.of(kind, **match)) < count:
                self._changed.clear()
                await self._changed.wait()
            return self.of(kind, **match)[count - 1]

        try:
            return await asyncio.wait_for(until(), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise AssertionError(f"no {kind} event #{count} matching {match} in {timeout}s; events: {self.events}") from None


async def worker_pids(nc: Any, pool: str = "p", node: str = "test") -> dict[str, int]:
    """Slot -> pid of the running workers of ``pool``, from the status endpoint."""
    status = await request(nc, node, "status")
    return {w["id"]: w["pid"] for w in status["pools"][pool]["workers"] if w["pid"]}


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``check`` until true (only for states that publish no event)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout}s")
        await asyncio.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def all_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    """Wait for processes to end; the pids still alive then (zombies count as gone).

    Polls: the processes are not ours to wait for (their parent may be dead).
    """
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if _alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The sum of the samples of ``name`` in a /metrics text whose labels include ``labels``; None if none."""
    from prometheus_client.parser import text_string_to_metric_families

    found = [
        s.value for family in text_string_to_metric_families(text) for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(found) if found else None
