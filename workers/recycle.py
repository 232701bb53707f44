"""When a worker should hand its slot to a fresh process.

``max_tasks_per_child``
    The worker takes exactly that many tasks: each fetch asks for no more
    than the tasks left in its budget, so when the budget is spent nothing
    was fetched that the worker will not process.
``max_age_s``
    Once the worker is that old it stops fetching.
hard time limit
    A handler could not be stopped (:mod:`workers.timelimits`).

In every case the worker finishes the tasks it holds (no task is lost, none
is handed to another worker half done, so none runs twice because of the
recycle) and exits with ``EXIT_RECYCLE``: the supervisor starts a fresh
process in the slot without counting a restart.
"""

from __future__ import annotations

import time

from config.schema import PoolConfig

MAX_TASKS = "max_tasks_per_child"
MAX_AGE = "max_age_s"
HARD_TIME_LIMIT = "hard_time_limit"


class RecyclePolicy:
    """Counts tasks taken and age; says when and why to recycle."""

    def __init__(self, pool: PoolConfig) -> None:
        self.max_tasks = pool.max_tasks_per_child
        self.max_age = pool.max_age_s
        self.started = time.monotonic()
        self.taken = 0
        self.reason: str | None = None

    def budget(self, want: int) -> int:
        """How many of ``want`` tasks the worker may still fetch."""
        if not self.max_tasks:
            return want
        return max(0, min(want, self.max_tasks - self.taken))

    def took(self, n: int) -> None:
        self.taken += n

    def request(self, reason: str) -> None:
        """Ask for a recycle (the first reason wins)."""
        if self.reason is None:
            self.reason = reason

    def due(self) -> str | None:
        """The reason to stop fetching now, if any."""
        if self.reason is None:
            if self.max_tasks and self.taken >= self.max_tasks:
                self.reason = MAX_TASKS
            elif self.max_age and time.monotonic() - self.started >= self.max_age:
                self.reason = MAX_AGE
        return self.reason
