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
