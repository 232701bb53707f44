"""Example handlers showing the handler API.

A handler takes the decoded JSON payload, and optionally ``ctx``
(:class:`workers.context.TaskContext`); it may be sync or async; what it
returns becomes ``result`` in the result body. An exception means "retry".
"""

from __future__ import annotations

import asyncio
from typing import Any

from workers.context import TaskContext


def echo(payload: Any) -> Any:
    """Return the payload unchanged."""
    return payload


async def sleep(payload: dict[str, Any]) -> dict[str, Any]:
    """Wait ``payload["seconds"]`` without blocking the worker's other tasks."""
    await asyncio.sleep(float(payload.get("seconds", 0.1)))
    return {"slept": payload.get("seconds", 0.1)}


def flaky(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Fail the first ``payload["fail_times"]`` attempts, then succeed."""
    if ctx.attempt <= int(payload.get("fail_times", 2)):
        raise RuntimeError(f"attempt {ctx.attempt} failed on purpose")
    return {"attempt": ctx.attempt}


def fail(payload: Any) -> None:
    """Always fail: shows the DLQ path."""
    raise ValueError(f"cannot process {payload!r}")


def count(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    """Count tasks in the agent's state: ``ctx.state`` survives restarts."""
    ctx.state["count"] = ctx.state.get("count", 0) + 1
    return {"worker": ctx.worker, "count": ctx.state["count"]}


async def aecho(payload: Any) -> Any:
    """Return the payload unchanged (an async handler)."""
    return payload
