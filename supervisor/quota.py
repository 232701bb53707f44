"""Resource quotas of a pool's workers, enforced from the supervisor with psutil.

The supervisor samples every running worker of a pool (RSS, CPU time, open
file descriptors) every :data:`SAMPLE_INTERVAL` seconds while the pool has a
quota — during tasks as well as between them, because a handler blowing up
its memory never reaches "between tasks". A breach:

* ``rss`` over ``max_rss_mb``, ``fds`` over ``max_open_fds``, or ``cpu``
  averaging over ``max_cpu_percent`` across the last ``cpu_window`` seconds:
  the worker is *recycled* — SIGTERM, it stops fetching and finishes its
  tasks within ``shutdown`` (SIGKILL only if stuck), and a fresh worker takes
  its slot. Not counted toward restart intensity.
* ``rss`` over :data:`HARD_RSS_FACTOR` × ``max_rss_mb`` (at any time,
  draining included): the worker is SIGKILLed at once, before it takes the
  host down. Its tasks are redelivered; the kill counts toward intensity.

Each breach is reported once per worker process and kind, as a ``quota``
event and the ``foundation_quota_breaches_total{pool,kind}`` metric. The
same samples feed the per-pool RSS and CPU gauges.

The RSS measured is the worker process's own (not its children's).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from config.schema import QuotaConfig
from supervisor import metrics

log = logging.getLogger("foundation.quota")

SAMPLE_INTERVAL = 0.05  # seconds; at 1 GB/s a runaway overshoots by 50 MB at most
IDLE_INTERVAL = 1.0  # seconds; a pool without quotas only refreshes its gauges
HARD_RSS_FACTOR = 1.5  # RSS past this multiple of max_rss_mb: kill, do not drain

MB = 2**20


@dataclass(frozen=True)
class Usage:
    """One sample of a worker process."""

    rss_bytes: int
    cpu_seconds: float  # user + system, since the process started
    fds: int


@dataclass(frozen=True)
class Breach:
    """A quota exceeded by one worker."""

    kind: str  # rss | cpu | fds
    value: float  # MB, percent or count
    limit: float
    hard: bool = False  # kill at once instead of recycling

    def describe(self) -> str:
        unit = {"rss": " MB", "cpu": "%", "fds": " fds"}[self.kind]
        over = f"{HARD_RSS_FACTOR:g} x " if self.hard else ""
        return f"quota {self.kind}: {self.value:.0f}{unit} > {over}{self.limit:g}{unit}"


class QuotaCheck:
    """The quota state of one worker process: pure, fed with samples.

    Args:
        quota: the pool's quota.
    """

    def __init__(self, quota: QuotaConfig) -> None:
        self.quota = quota
        self.cpu_percent = 0.0  # over the last sample interval (for the gauge)
        self._cpu: deque[tuple[float, float]] = deque()  # (time, cpu seconds)

    def update(self, now: float, usage: Usage) -> Breach | None:
        """Record a sample taken at ``now`` (monotonic seconds); the breach, if any.

        A hard RSS breach wins over any other; CPU is judged only once a full
        ``cpu_window`` of samples exists, as the average over that window.
        """
        q = self.quota
        if self._cpu:
            t, cpu = self._cpu[-1]
            self.cpu_percent = 100.0 * (usage.cpu_seconds - cpu) / max(now - t, 1e-9)
        self._cpu.append((now, usage.cpu_seconds))
        # Keep exactly one sample at or before the window's start.
        while len(self._cpu) > 1 and now - self._cpu[1][0] >= q.cpu_window:
            self._cpu.popleft()
        rss_mb = usage.rss_bytes / MB
        if q.max_rss_mb and rss_mb > q.max_rss_mb * HARD_RSS_FACTOR:
            return Breach("rss", rss_mb, q.max_rss_mb, hard=True)
        if q.max_rss_mb and rss_mb > q.max_rss_mb:
            return Breach("rss", rss_mb, q.max_rss_mb)
        if q.max_open_fds and usage.fds > q.max_open_fds:
            return Breach("fds", usage.fds, q.max_open_fds)
        t0, cpu0 = self._cpu[0]
        if q.max_cpu_percent and now - t0 >= q.cpu_window:
            average = 100.0 * (usage.cpu_seconds - cpu0) / (now - t0)
            if average > q.max_cpu_percent:
                return Breach("cpu", average, q.max_cpu_percent)
        return None


def limited(quota: QuotaConfig) -> bool:
    """Whether the quota limits any OS resource the sampler enforces."""
    return bool(quota.max_rss_mb or quota.max_cpu_percent or quota.max_open_fds)


def _sample(procs: dict[int, psutil.Process]) -> dict[int, Usage]:
    out: dict[int, Usage] = {}
    for pid, proc in procs.items():
        try:
            with proc.oneshot():
                mem = proc.memory_info()
                cpu = proc.cpu_times()
                fds = proc.num_fds()
        except psutil.Error:
            continue  # exited between listing and sampling
        out[pid] = Usage(mem.rss, cpu.user + cpu.system, fds)
    return out


BreachSink = Callable[[str, int, Breach, str], None]  # (slot, pid, breach, action)


class ResourceSampler:
    """Samples one pool's workers, acts on breaches, and sets the pool's gauges.

    Args:
        pool: the pool supervisor (a :class:`supervisor.pool.PoolSupervisor`).
        on_breach: told ``(slot, pid, breach, action)`` once per process and kind;
            ``action`` is ``recycle``, ``kill`` or ``none`` (already leaving).
        interval: seconds between samples (default: by whether there is a quota).
    """

    def __init__(self, pool: Any, on_breach: BreachSink, interval: float | None = None) -> None:
        self.pool = pool
        self.quota: QuotaConfig = pool.pool.quota
        self.on_breach = on_breach
        self.interval = interval or (SAMPLE_INTERVAL if limited(self.quota) else IDLE_INTERVAL)
        self.peak_rss_bytes: dict[str, int] = {}  # slot -> highest RSS sampled, for reports
        self._procs: dict[int, psutil.Process] = {}
        self._checks: dict[int, QuotaCheck] = {}
        self._reported: set[tuple[int, str]] = set()

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            try:
                await self.sample_once()
            except Exception:  # never let a sampling hiccup end enforcement
                log.exception("sampling pool %s failed", self.pool.pool.name)
            await asyncio.sleep(self.interval)

    async def sample_once(self) -> None:
        running = {c.pid: c.id for c in self.pool.workers if c.running and c.pid}
        for pid in list(self._procs):
            if pid not in running:
                del self._procs[pid]
                self._checks.pop(pid, None)
                self._reported = {r for r in self._reported if r[0] != pid}
        for pid in running:
            if pid not in self._procs:
                try:
                    self._procs[pid] = psutil.Process(pid)
                except psutil.Error:
                    continue
                self._checks[pid] = QuotaCheck(self.quota)
        # /proc reads are quick but blocking: keep them off the event loop.
        usages = await asyncio.to_thread(_sample, dict(self._procs))
        now = time.monotonic()
        rss = cpu = 0.0
        for pid, usage in usages.items():
            slot = running.get(pid)
            check = self._checks.get(pid)
            if slot is None or check is None:
                continue
            breach = check.update(now, usage)
            rss += usage.rss_bytes
            cpu += check.cpu_percent
            self.peak_rss_bytes[slot] = max(self.peak_rss_bytes.get(slot, 0), usage.rss_bytes)
            if breach is not None:
                self._act(slot, pid, breach)
        m = metrics.metrics()
        m.rss.labels(self.pool.pool.name).set(rss)
        m.cpu.labels(self.pool.pool.name).set(cpu)
        m.workers.labels(self.pool.pool.name).set(len(usages))

    def _act(self, slot: str, pid: int, breach: Breach) -> None:
        key = (pid, "hard" if breach.hard else breach.kind)
        if key in self._reported:
            return
        self._reported.add(key)
        why = f"{breach.describe()} (pid {pid})"
        if breach.hard:
            action = "kill" if self.pool.kill_child(slot, why) else "none"
        else:
            action = "recycle" if self.pool.replace_child(slot, why, cause="quota") else "none"
        log.warning("%s: %s; %s", slot, why, action)
        self.on_breach(slot, pid, breach, action)
