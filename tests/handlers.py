"""Handlers used by the tests' worker processes (importable as ``tests.handlers``)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any


async def slow(payload: dict[str, Any]) -> dict[str, Any]:
    """Sleeps ``payload["seconds"]`` (simulated work), returns the payload."""
    await asyncio.sleep(float(payload.get("seconds", 0.05)))
    return payload


def crash_on(payload: dict[str, Any]) -> dict[str, Any]:
    """Kills its own process when ``payload["crash"]`` is true (a poison task)."""
    if payload.get("crash"):
        os._exit(13)
    return payload


_HELD: list[Any] = []  # what the leaking handlers below keep alive


def hold_memory(payload: dict[str, Any]) -> dict[str, Any]:
    """Allocate ``payload["mb"]`` MB and keep it (a leak that grows RSS), then
    work ``payload["seconds"]``."""
    _HELD.append(b"\x01" * (int(payload["mb"]) * 2**20))  # written, so resident
    time.sleep(float(payload.get("seconds", 0)))
    return payload


def hold_fds(payload: dict[str, Any]) -> dict[str, Any]:
    """Open ``payload["fds"]`` file descriptors and keep them open (an fd leak),
    then work ``payload["seconds"]``."""
    _HELD.extend(open(os.devnull, "rb") for _ in range(int(payload["fds"])))
    time.sleep(float(payload.get("seconds", 0)))
    return payload


async def balloon(payload: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """On its first attempt, grow RSS by 10 MB every 20 ms until stopped.

    A runaway task: only a kill stops it (it gives up after ``max_mb``).
    Later attempts return at once.
    """
    if ctx.attempt == 1:
        for _ in range(int(payload.get("max_mb", 2000)) // 10):
            _HELD.append(b"\x01" * (10 * 2**20))
            await asyncio.sleep(0.02)
        raise RuntimeError("the balloon was never stopped")
    return {"attempt": ctx.attempt}


def spin(payload: dict[str, Any]) -> dict[str, Any]:
    """Keep a core busy for ``payload["seconds"]`` (CPU-bound work)."""
    end = time.perf_counter() + float(payload["seconds"])
    n = 0
    while time.perf_counter() < end:
        n += 1
    return {"spins": n}


def read_variable(payload: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """The live value of shared variable ``payload["name"]`` as this worker sees it,
    after ``payload["seconds"]`` of work."""
    time.sleep(float(payload.get("seconds", 0)))
    return {"worker": ctx.worker, "pid": os.getpid(), "value": ctx.variables[payload["name"]],
            "names": sorted(ctx.variables)}


async def judge(payload: dict[str, Any], ctx: Any) -> Any:
    """Answers consensus proposals (``vote:<group>`` capability): yes to an amount up
    to ``limit``, no with a reason above it; echoes ordinary tasks."""
    proposal = payload.get("proposal")
    if proposal is None:
        return payload
    value = proposal["value"]
    if value.get("abstain"):
        return "abstain"
    if value.get("garble"):
        return {"not": "a ballot"}
    if value["amount"] <= value.get("limit", 100):
        return True
    return {"vote": "no", "reason": f"{ctx.worker} finds {value['amount']} too much ({ctx.task_id.split('.')[0]})"}


async def timed(payload: dict[str, Any]) -> dict[str, float]:
    """Works ``payload["seconds"]``; returns when it started and ended (wall clock)."""
    start = time.time()
    await asyncio.sleep(float(payload.get("seconds", 0.05)))
    return {"start": start, "end": time.time()}


def poison(payload: dict[str, Any]) -> dict[str, Any]:
    """Kills its own worker on request: ``segfault``, ``exit`` (os._exit), or
    ``hog`` (allocates ~10 MB every 10 ms until the RSS quota kills it)."""
    if payload.get("segfault"):
        import ctypes

        ctypes.string_at(0)  # reads address 0: SIGSEGV
    if payload.get("exit"):
        os._exit(13)
    if payload.get("hog"):
        hoard = []
        while True:
            hoard.append(bytearray(10 * 2**20))
            time.sleep(0.01)
    time.sleep(float(payload.get("seconds", 0.005)))
    return payload


async def tally(payload: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Counts the task in ``ctx.state``; with ``fail``, raises after counting
    (the count must be rolled back); works ``seconds`` first."""
    await asyncio.sleep(float(payload.get("seconds", 0)))
    ctx.state["count"] = ctx.state.get("count", 0) + 1
    if payload.get("fail"):
        raise RuntimeError(f"failing after counting {ctx.task_id}")
    return {"count": ctx.state["count"]}


def tally_sync(payload: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """:func:`tally` as a sync handler (run on the agent's thread); with
    ``first_only``, works ``seconds`` on the first attempt only."""
    if not payload.get("first_only") or ctx.attempt == 1:
        time.sleep(float(payload.get("seconds", 0)))
    ctx.state["count"] = ctx.state.get("count", 0) + 1
    if payload.get("fail"):
        raise RuntimeError(f"failing after counting {ctx.task_id}")
    return {"count": ctx.state["count"]}


async def nap(payload: dict[str, Any]) -> dict[str, Any]:
    """Sleeps ``seconds`` (async); with ``catch``, catches the soft time limit and returns."""
    try:
        await asyncio.sleep(float(payload["seconds"]))
    except asyncio.CancelledError:
        if payload.get("catch"):
            return {"cleaned_up": True}
        raise
    return {"slept": payload["seconds"]}


def busy_wait(payload: dict[str, Any]) -> dict[str, Any]:
    """Sync, in short Python-level steps for ``seconds`` (a soft limit can interrupt it)."""
    end = time.monotonic() + float(payload["seconds"])
    while time.monotonic() < end:
        time.sleep(0.005)
    return {"waited": payload["seconds"]}


def stuck_first(payload: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """On its first attempt blocks in one C call for ``seconds`` (no soft limit can
    reach it); later attempts count in ``ctx.state`` and return."""
    if ctx.attempt == 1:
        time.sleep(float(payload.get("seconds", 60)))
    ctx.state["count"] = ctx.state.get("count", 0) + 1
    return {"attempt": ctx.attempt}


async def where(payload: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Returns the worker's pid (which node served the task); with ``count``,
    counts the task in ``ctx.state`` first; works ``seconds``."""
    await asyncio.sleep(float(payload.get("seconds", 0)))
    if payload.get("count"):
        ctx.state["count"] = ctx.state.get("count", 0) + 1
    return {"pid": os.getpid()}
