"""Lifecycle hooks around each task, in the manner of dramatiq's middleware.

``before_task`` hooks run in order, ``after_task`` hooks in reverse order, so
a middleware wraps everything registered after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

OutcomeKind = Literal["ok", "retry", "exhausted", "invalid", "duplicate", "abandoned"]


@dataclass
class Task:
    """One delivery of a task to this worker."""

    task_id: str
    pool: str
    attempt: int
    stream_seq: int
    headers: dict[str, str]
    started: float  # time.perf_counter() at receipt


@dataclass
class Outcome:
    """How a delivery ended.

    ``ok``: result stored, task acked. ``retry``: nak'ed for redelivery.
    ``exhausted``: dead-lettered after ``max_deliver`` attempts. ``invalid``:
    dead-lettered at once (bad JSON, oversize body). ``duplicate``: the agent
    had already applied it; its result re-published, acked. ``abandoned``:
    left for redelivery without running to an outcome (the worker stopped,
    or its delivery may have moved to another worker).
    """

    kind: OutcomeKind
    result: Any = None
    error: BaseException | None = None
    handler_seconds: float | None = None


class Middleware:
    """Base class: override the hooks you need. Hooks must not raise."""

    def before_task(self, task: Task) -> None:
        pass

    def after_task(self, task: Task, outcome: Outcome) -> None:
        pass


class MiddlewareStack:
    def __init__(self, middleware: list[Middleware]) -> None:
        self.middleware = list(middleware)

    def before_task(self, task: Task) -> None:
        for m in self.middleware:
            m.before_task(task)

    def after_task(self, task: Task, outcome: Outcome) -> None:
        for m in reversed(self.middleware):
            m.after_task(task, outcome)
