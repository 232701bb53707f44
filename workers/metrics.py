"""Worker-side Prometheus metrics, recorded as lifecycle middleware.

In a supervised node ``PROMETHEUS_MULTIPROC_DIR`` is set before any process
imports ``prometheus_client``, so every worker writes its own value files and
the root supervisor's ``/metrics`` aggregates them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from workers.middleware import Middleware, Outcome, Task

TASKS_PROCESSED = Counter("foundation_tasks_processed_total", "Tasks whose result was stored and acked.", ["pool"])
TASKS_FAILED = Counter("foundation_tasks_failed_total", "Handler exceptions (each attempt counts).", ["pool"])
TASKS_RETRIED = Counter("foundation_tasks_retried_total", "Tasks handed back for redelivery after a failure.", ["pool"])
TASKS_DEAD = Counter("foundation_tasks_dead_lettered_total", "Tasks sent to the DLQ.", ["pool", "reason"])
TASKS_DEDUPLICATED = Counter(
    "foundation_tasks_deduplicated_total", "Redelivered tasks found already applied: not run again.", ["pool"]
)
TASKS_ABANDONED = Counter(
    "foundation_tasks_abandoned_total", "Tasks handed back for redelivery without an outcome.", ["pool"]
)
TASK_SECONDS = Histogram(
    "foundation_task_duration_seconds",
    "Handler run time.",
    ["pool"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
IN_FLIGHT = Gauge("foundation_tasks_in_flight", "Tasks being handled now.", ["pool"], multiprocess_mode="livesum")

# How a task got into the DLQ: its last attempt raised (exhausted), its body
# could not be a task (invalid), or its worker died on every attempt and the
# server's MAX_DELIVERIES advisory (or the sweep) sent it (worker_died).
DEAD_LETTER_REASONS = ("exhausted", "invalid", "worker_died")


def declare(pool: str) -> None:
    """Create a pool's label sets at 0 (the supervisor does, before its workers start)."""
    for metric in (TASKS_PROCESSED, TASKS_FAILED, TASKS_RETRIED, TASKS_DEDUPLICATED, TASKS_ABANDONED, TASK_SECONDS, IN_FLIGHT):
        metric.labels(pool)
    for reason in DEAD_LETTER_REASONS:
        TASKS_DEAD.labels(pool, reason)


class MetricsMiddleware(Middleware):
    """Counts outcomes and handler latency per pool."""

    def before_task(self, task: Task) -> None:
        IN_FLIGHT.labels(task.pool).inc()

    def after_task(self, task: Task, outcome: Outcome) -> None:
        IN_FLIGHT.labels(task.pool).dec()
        if outcome.handler_seconds is not None:
            TASK_SECONDS.labels(task.pool).observe(outcome.handler_seconds)
        if outcome.error is not None and outcome.kind in ("retry", "exhausted"):
            TASKS_FAILED.labels(task.pool).inc()
        if outcome.kind == "ok":
            TASKS_PROCESSED.labels(task.pool).inc()
        elif outcome.kind == "duplicate":
            TASKS_DEDUPLICATED.labels(task.pool).inc()
        elif outcome.kind == "abandoned":
            TASKS_ABANDONED.labels(task.pool).inc()
        elif outcome.kind == "retry":
            TASKS_RETRIED.labels(task.pool).inc()
        else:
            TASKS_DEAD.labels(task.pool, outcome.kind).inc()
