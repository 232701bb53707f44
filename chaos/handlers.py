"""Handlers for chaos runs: each keeps a count of the tasks its agent applied.

The count lives in ``ctx.state``, so it is stored with the agent state and
committed with each task: after a run, an agent's count must equal the number
of results that name it — more means an effect applied twice, fewer an
acknowledged effect lost (:mod:`chaos.checker`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from workers.context import TaskContext


async def count(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Count the task in the agent's state; optionally work ``payload["work_ms"]``."""
    work_ms = float(payload.get("work_ms", 0) or 0)
    if work_ms:
        await asyncio.sleep(work_ms / 1000)
    ctx.state["count"] = ctx.state.get("count", 0) + 1
    return {"i": payload.get("i"), "count": ctx.state["count"]}


def count_sync(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """:func:`count` as a sync handler: its calls run on the agent's thread."""
    work_ms = float(payload.get("work_ms", 0) or 0)
    if work_ms:
        time.sleep(work_ms / 1000)
    ctx.state["count"] = ctx.state.get("count", 0) + 1
    return {"i": payload.get("i"), "count": ctx.state["count"]}
