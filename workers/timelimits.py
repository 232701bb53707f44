"""Per-pool time limits of a handler call.

``time_limit`` (soft)
    When it passes, the handler is interrupted: an async handler is
    cancelled (``CancelledError`` where it awaits; the call then fails with
    :class:`SoftTimeLimitExceeded`), a sync handler gets
    :class:`SoftTimeLimitExceeded` raised in its thread at its next Python
    instruction. The failure is an ordinary handler error: the task is
    retried with backoff, or dead-lettered after ``max_deliver`` attempts.
    A handler may catch it to clean up; if it then returns a value, that is
    its result.

``hard_time_limit``
    For a handler that ignores or cannot see the soft limit (blocked in C
    code, swallowing cancellation). Nothing inside the process can stop such
    a call, so the worker gives up on it: :class:`HardTimeLimitExceeded` is
    raised to the consume loop, which hands the task back for a retry and
    recycles the worker (:mod:`workers.consumer`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from config.errors import WorkerError
from workers.handler import Running


class SoftTimeLimitExceeded(WorkerError, TimeoutError):
    """The handler ran over the pool's ``time_limit`` (also a :class:`TimeoutError`)."""

    def __init__(self, message: str = "the handler ran over its soft time limit") -> None:
        super().__init__(message)


class HardTimeLimitExceeded(WorkerError):
    """The handler ran over the pool's ``hard_time_limit``; the worker is recycled."""


async def run_limited(call: Running, soft: float = 0.0, hard: float = 0.0) -> Any:
    """Await ``call`` under the soft and hard limits (0 disables a limit).

    Raises:
        SoftTimeLimitExceeded: the soft limit interrupted the handler.
        HardTimeLimitExceeded: the hard limit passed; ``call`` may still run.
        Exception: whatever the handler raised.
    """
    fut = call.future
    t0 = time.monotonic()
    try:
        if soft:
            done, _ = await asyncio.wait({fut}, timeout=soft)
            if not done:
                call.interrupt(SoftTimeLimitExceeded)
        if hard:
            done, _ = await asyncio.wait({fut}, timeout=max(0.0, hard - (time.monotonic() - t0)))
            if not done:
                raise HardTimeLimitExceeded(f"the handler ran over its hard time limit of {hard:g}s; the worker is recycled")
        try:
            return await fut
        except asyncio.CancelledError:
            if call.interrupted and not _cancelling():
                raise SoftTimeLimitExceeded(f"the handler ran over its soft time limit of {soft:g}s") from None
            raise
        except SoftTimeLimitExceeded:
            raise SoftTimeLimitExceeded(f"the handler ran over its soft time limit of {soft:g}s") from None
    except asyncio.CancelledError:
        # We are being cancelled (the worker abandons its tasks): stop the handler too.
        if not fut.done() and not call.in_thread:
            fut.cancel()
        raise


def _cancelling() -> bool:
    """Whether the current task itself was asked to cancel (not just the handler)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
