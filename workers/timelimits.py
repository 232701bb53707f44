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
    raised up the chain — a failed attempt (retried, or dead-lettered on the
    last) — and the worker is asked to recycle (:mod:`workers.recycle`).

:class:`TimeLimits` is the middleware that applies them to the rest of the
chain (the handler call next to it); :func:`run_limited` applies them to one
:class:`~workers.handler.Running` call (the market contractor's).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from config.errors import WorkerError
from workers.delivery import Delivery, Outcome
from workers.handler import Running
from workers.middleware import Next

log = logging.getLogger("foundation.worker")


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


class TimeLimits:
    """The pool's soft and hard time limits around the rest of the chain (a middleware).

    Args:
        soft, hard: seconds (0 disables a limit).
        on_hard: called when the hard limit passes (the worker asks to recycle).
    """

    def __init__(self, soft: float, hard: float, on_hard: Callable[[], None]) -> None:
        self.soft = soft
        self.hard = hard
        self.on_hard = on_hard

    async def __call__(self, d: Delivery, call_next: Next) -> Outcome:
        inner = asyncio.ensure_future(call_next(d))
        interrupted = False
        try:
            if self.soft and await _ran_over(inner, d, self.soft):
                assert d.running is not None
                d.running.interrupt(SoftTimeLimitExceeded)
                interrupted = True
            if self.hard:
                if await _ran_over(inner, d, self.hard):
                    inner.add_done_callback(_retrieve)  # it may end some day; nobody waits for it
                    self.on_hard()
                    log.error("task %s ran over the hard time limit of %gs; recycling after the work in hand",
                              d.task_id, self.hard)
                    raise self._failure(d, HardTimeLimitExceeded(
                        f"the handler ran over its hard time limit of {self.hard:g}s; the worker is recycled"))
            try:
                return await inner
            except asyncio.CancelledError:
                if interrupted and not _cancelling():
                    raise self._failure(d, SoftTimeLimitExceeded(
                        f"the handler ran over its soft time limit of {self.soft:g}s")) from None
                raise
            except SoftTimeLimitExceeded:
                raise self._failure(d, SoftTimeLimitExceeded(
                    f"the handler ran over its soft time limit of {self.soft:g}s")) from None
        except asyncio.CancelledError:
            # We are being cancelled (the worker abandons its tasks): stop the handler too.
            running = d.running
            if not inner.done() and (running is None or not running.in_thread):
                inner.cancel()
            raise

    @staticmethod
    def _failure(d: Delivery, exc: BaseException) -> BaseException:
        d.failure = exc  # a failure of the handler's, not of a middleware
        return exc


async def _ran_over(inner: asyncio.Future[Any], d: Delivery, limit: float) -> bool:
    """Wait until ``inner`` is done (false) or its handler has run for ``limit``
    seconds (true); time a call spends queued for a thread does not count."""
    while True:
        started = d.running.started if d.running is not None else None
        left = limit if started is None else started + limit - time.monotonic()
        if left <= 0:
            return True
        done, _ = await asyncio.wait({inner}, timeout=left)
        if done:
            return False


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _cancelling() -> bool:
    """Whether the current task itself was asked to cancel (not just the handler)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
