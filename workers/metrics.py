"""Worker-side Prometheus metrics: the outermost middleware of the chain.

In a supervised node ``PROMETHEUS_MULTIPROC_DIR`` is set before any process
imports ``prometheus_client``, so every worker writes its own value files and
the root supervisor's ``/metrics`` aggregates them.

To add a metric of the task path: declare it here, bind its children per
pool in :class:`PoolMetrics`, and record it in :meth:`PoolMetrics.record`
(or around ``call_next`` in :meth:`MetricsMiddleware.__call__`).

Cost per task: every write to a multiprocess value takes a lock, checks the
pid and writes the mmapped file, so the task path writes only what must
survive a ``kill -9`` of the worker right after its ack (the outcome
counter and the latency histogram), through children bound once per pool.
The in-flight gauge is counted in a plain int and written every
:data:`GAUGE_INTERVAL` seconds (a dead worker's gauges are dropped anyway),
and so is the queue-wait histogram (:class:`LocalHistogram`: bucket counts in
plain ints; a ``kill -9`` loses at most that interval of waits, never a
count). A redelivery is counted on the spot: it is rare.

Results stored need no update of their own: every outcome that stores a
result is counted already (processed, dead-lettered, deduplicated), and the
recording rule ``node_pool:foundation_results_stored:rate1m`` adds them up.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from workers.delivery import Delivery, Outcome
from workers.middleware import Middleware, Next

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
QUEUE_WAIT = Histogram(
    "foundation_task_queue_wait_seconds",
    "Time from a task's publish (its timestamp in TASKS) to the start of its first attempt.",
    ["pool"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
REDELIVERIES = Counter(
    "foundation_task_redeliveries_total",
    "Deliveries of a task after its first: retries after a failure, and redeliveries after a lost worker or lease.",
    ["pool"],
)

# How a task got into the DLQ: its last attempt raised (exhausted), its body
# could not be a task (invalid), or its worker died on every attempt and the
# server's MAX_DELIVERIES advisory (or the sweep) sent it (worker_died).
DEAD_LETTER_REASONS = ("exhausted", "invalid", "worker_died")


def declare(pool: str) -> None:
    """Create a pool's label sets at 0 (the supervisor does, before its workers start)."""
    for metric in (TASKS_PROCESSED, TASKS_FAILED, TASKS_RETRIED, TASKS_DEDUPLICATED, TASKS_ABANDONED, TASK_SECONDS,
                   IN_FLIGHT, QUEUE_WAIT, REDELIVERIES):
        metric.labels(pool)
    for reason in DEAD_LETTER_REASONS:
        TASKS_DEAD.labels(pool, reason)


GAUGE_INTERVAL = 0.5  # seconds between writes of the in-flight gauge and the queue waits


class LocalHistogram:
    """Observations of one histogram child counted in this process, written on :meth:`flush`.

    A multiprocess write costs a lock and an mmap write per bucket and per
    sum; this keeps the task path at a bisect and two additions. It writes
    into the child's own bucket and sum values (``_upper_bounds``,
    ``_buckets``, ``_sum`` of prometheus-client's ``Histogram``, pinned in
    pyproject.toml; tests/workers/test_metrics.py checks the figures match
    direct observations).
    """

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bucket whose bound is >= value
        self.total += value

    def flush(self) -> None:
        counts, self.counts = self.counts, [0] * len(self.bounds)
        for i, n in enumerate(counts):
            if n:
                self.child._buckets[i].inc(n)
        if any(counts):
            self.child._sum.inc(self.total)
        self.total = 0.0


class PoolMetrics:
    """The metric children of one pool, bound once."""

    def __init__(self, pool: str) -> None:
        self.in_flight = IN_FLIGHT.labels(pool)
        self.holding = 0  # tasks in the chain now; written to in_flight on a timer
        self.seconds = TASK_SECONDS.labels(pool)
        self.queue_wait = LocalHistogram(QUEUE_WAIT.labels(pool))
        self.redeliveries = REDELIVERIES.labels(pool)
        self.failed = TASKS_FAILED.labels(pool)
        self.by_kind = {
            "ok": TASKS_PROCESSED.labels(pool),
            "duplicate": TASKS_DEDUPLICATED.labels(pool),
            "abandoned": TASKS_ABANDONED.labels(pool),
            "retry": TASKS_RETRIED.labels(pool),
            "exhausted": TASKS_DEAD.labels(pool, "exhausted"),
            "invalid": TASKS_DEAD.labels(pool, "invalid"),
        }

    def record(self, outcome: Outcome) -> None:
        if outcome.handler_seconds is not None:
            self.seconds.observe(outcome.handler_seconds)
        if outcome.error is not None and outcome.kind in ("retry", "exhausted"):
            self.failed.inc()
        self.by_kind[outcome.kind].inc()


class MetricsMiddleware(Middleware):
    """Counts outcomes and handler latency per pool."""

    def __init__(self) -> None:
        self._pools: dict[str, PoolMetrics] = {}
        self._timer: asyncio.TimerHandle | None = None

    def _of(self, pool: str) -> PoolMetrics:
        m = self._pools.get(pool)
        if m is None:
            m = self._pools[pool] = PoolMetrics(pool)
        return m

    def flush(self) -> None:
        """Write what is counted locally (the queue waits) now, e.g. before the process exits."""
        for m in self._pools.values():
            m.queue_wait.flush()

    def _write_gauges(self) -> None:
        for m in self._pools.values():
            m.in_flight.set(m.holding)
            m.queue_wait.flush()
        self._timer = asyncio.get_running_loop().call_later(GAUGE_INTERVAL, self._write_gauges)

    async def __call__(self, d: Delivery, call_next: Next) -> Outcome:
        m = self._of(d.pool)
        if self._timer is None:
            self._write_gauges()
        m.holding += 1
        if d.attempt == 1:
            # The stream's timestamp of the message: when it was published.
            m.queue_wait.observe(max(0.0, time.time() - d.msg.metadata.timestamp.timestamp()))
        else:
            m.redeliveries.inc()
        try:
            outcome = await call_next(d)
        except asyncio.CancelledError:
            m.record(Outcome("abandoned"))
            raise
        except Exception as exc:
            m.record(Outcome("retry", error=exc))
            raise
        finally:
            m.holding -= 1
        m.record(outcome)
        return outcome
