"""One chaos run: workload, nemesis schedule, heal, drain, check.

1. Connect to ``env.url``; check that the pool exists (its consumer on
   ``TASKS``) — a missing pool is an error at once, never a silent wait.
   Note where this run's outcomes begin in the streams and each agent's
   effect count, so a shared node's earlier tasks do not count.
2. Publish ``rate`` tasks a second for ``duration`` seconds, every outcome
   recorded (:class:`~chaos.workload.Workload`); meanwhile the schedule
   injects a nemesis, holds it ``fault_s``, heals it, and rests ``calm_s``,
   from ``warmup`` on, until the workload's end; every window is recorded.
3. Heal everything; drain: wait until each acked task has an outcome, or
   until no outcome came for ``quiet_s`` (the checker then reads the
   streams themselves and names what is missing as lost).
4. Check (:func:`chaos.checker.check`). The effects check needs the pool's
   handler to count in ``ctx.state["count"]`` (:func:`chaos.handlers.count`
   does): when no agent holds such a count, it is skipped with that reason.

Time to recover, per window: from the heal to the first result of a task
published after it.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from broker import collect_results, connect, jetstream, subjects
from chaos.checker import Report, check
from chaos.env import Env
from chaos.history import ACKED, FAILED, UNKNOWN
from chaos.nemesis import Nemesis
from chaos.observe import drop_uncounted, effects_of, next_seq, observe, require_pool
from chaos.workload import Workload


@dataclass
class Window:
    """One fault: when it was injected and healed (seconds from the run's start) and what it was."""

    start: float
    end: float
    label: str
    healed: str = ""
    recovery_s: float | None = None  # heal → first result of a task published after it


@dataclass
class RunResult:
    scenario: str
    seed: int
    duration: float
    report: Report
    windows: list[Window]
    publishes: list[tuple[float, float, str]]  # (sent, answered, outcome), seconds from start
    results: list[tuple[float, float]]  # (arrived, end-to-end latency)
    drain_s: float
    notes: list[str] = field(default_factory=list)
    expect_loss: bool = False

    @property
    def recovery_s(self) -> float | None:
        times = [w.recovery_s for w in self.windows if w.recovery_s is not None]
        return max(times) if times else None

    @property
    def unrecovered(self) -> int:
        return sum(1 for w in self.windows if w.recovery_s is None)

    def verdict(self) -> str:
        r = self.report
        dp = "not counted" if r.duplicates_processed is None else r.duplicates_processed
        rec = "n/a" if not self.windows else (
            f"{self.recovery_s:.2f}s" if self.recovery_s is not None else "never")
        return (
            f"verdict: {'valid' if r.valid else 'INVALID'} — lost {len(r.lost)}, unexpected {len(r.unexpected)}, "
            f"duplicates processed {dp}, stored {r.duplicates_stored}, unknown {r.unknown} "
            f"({r.recovered} of the failed/unknown found), {len(self.windows)} faults, max time to recover {rec}"
            + (f" ({self.unrecovered} with no task completed after its heal)" if self.unrecovered and self.recovery_s is not None else "")
        )

    def lines(self) -> list[str]:
        out = [f"scenario {self.scenario} (seed {self.seed}, {self.duration:g}s)"]
        out += [f"  fault {w.start:6.2f}s–{w.end:6.2f}s  {w.label}; {w.healed}; recovered "
                + (f"in {w.recovery_s:.2f}s" if w.recovery_s is not None else "— no new task completed after it")
                for w in self.windows]
        out.append(f"time to drain after the last heal: {self.drain_s:.2f}s")
        out += [f"note: {n}" for n in self.notes]
        out += self.report.lines()[:-1]
        if self.expect_loss:
            out.append("expected: lost > 0 (this scenario shows that the checker catches a loss)")
        out.append(self.verdict())
        return out


class Progress:
    """Prints the run's state every second (a rewritten line on a terminal, else every 5 s)."""

    def __init__(self, stream: Any = sys.stderr) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.fault = ""

    async def run(self, started: float, state: Callable[[], str]) -> None:
        every = 1.0 if self.tty else 5.0
        while True:
            await asyncio.sleep(every)
            line = f"[{time.perf_counter() - started:6.1f}s] {state()}" + (f" | fault: {self.fault}" if self.fault else "")
            self.stream.write(("\r\x1b[K" + line) if self.tty else line + "\n")
            self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")


async def wait_results(results: Any, wanted: set[str] | int, *, quiet_s: float, timeout: float) -> bool:
    """Wait until a result is in for each of ``wanted`` (or that many); True when they all are.

    Gives up (False) after ``quiet_s`` without a new result, or after
    ``timeout`` in all: a stalled pipeline — or a stalled subscription of the
    collector — ends the wait, and the checker reads the streams themselves.
    """
    started = time.perf_counter()
    while True:
        before = len(results.results)
        try:
            await results.wait_for(wanted, timeout=quiet_s)
            return True
        except (asyncio.TimeoutError, TimeoutError):
            if len(results.results) == before or time.perf_counter() - started > timeout:
                return False


async def run(
    env: Env,
    scenario: str,
    nemeses: list[Nemesis],
    *,
    seed: int,
    duration: float,
    rate: float,
    fault_s: float,
    calm_s: float,
    pick: str = "cycle",
    quiet_s: float = 20.0,
    drain_timeout: float = 300.0,
    publish_timeout: float = 2.0,
    work_ms: float = 0.0,
    expect_loss: bool = False,
    progress: Progress | None = None,
) -> RunResult:
    """Run one scenario in ``env``; see the module doc."""
    rng = random.Random(seed)
    nc = await connect(env.url, name=f"chaos {scenario}")
    env.nc = nc
    js = jetstream(nc, timeout=10)
    notes: list[str] = []
    try:
        await require_pool(js, env.pool, env.url)
        results_from = await next_seq(js, subjects.RESULTS_STREAM)
        dead_from = await next_seq(js, subjects.DLQ_STREAM)
        baseline = await effects_of(js, env.pool)
        n = max(1, int(rate * duration))
        workload = Workload(js, env.pool, n, payload=lambda i: {"i": i, "work_ms": work_ms} if work_ms else {"i": i}, window=512, timeout=publish_timeout)
        windows: list[Window] = []
        async with collect_results(js, env.pool) as results:
            t0 = time.perf_counter()

            async def pace(i: int) -> None:
                wait = t0 + i / rate - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)

            async def schedule() -> None:
                await asyncio.sleep(min(2.0, duration * 0.15))
                k = 0
                # Each heal is followed by a calm stretch of workload: its recovery is measured.
                while time.perf_counter() - t0 + fault_s + calm_s <= duration:
                    nemesis = nemeses[k % len(nemeses)] if pick == "cycle" else rng.choice(nemeses)
                    k += 1
                    start = time.perf_counter() - t0
                    label = await nemesis.inject()
                    if progress:
                        progress.fault = label
                    window = Window(start, start, label)
                    windows.append(window)
                    try:
                        await asyncio.sleep(fault_s)
                    finally:
                        window.healed = await nemesis.heal()
                        window.end = time.perf_counter() - t0
                        if progress:
                            progress.fault = ""
                    await asyncio.sleep(calm_s)

            def state() -> str:
                c = workload.history.counts()
                return (f"published {workload.published}/{n} (acked {c[ACKED]}, failed {c[FAILED]}, "
                        f"unknown {c[UNKNOWN]}) | results {len(results.results)}")

            shows = asyncio.create_task(progress.run(t0, state)) if progress else None
            faults = asyncio.create_task(schedule())
            try:
                history = await workload.run(pace)
                await faults
                drain_from = time.perf_counter()
                acked = history.ids(ACKED)
                if not await wait_results(results, acked, quiet_s=quiet_s, timeout=drain_timeout):
                    missing = len(acked - results.results.keys())
                    notes.append(f"drain stopped: {missing} acked task(s) without a result seen after {quiet_s:g}s without progress")
                drain_s = time.perf_counter() - drain_from
            finally:
                faults.cancel()
                if shows:
                    shows.cancel()
                if progress:
                    progress.done()
            arrived = {t: a - t0 for t, a in results.arrived.items()}
        seen = await observe(js, env.pool, results_from=results_from, dead_from=dead_from, baseline=baseline)
        if why := drop_uncounted(seen, env.pool):
            notes.append(why)
        report = check(history, seen)
    finally:
        await nc.close()
        env.nc = None
    sent = {t: s - t0 for t, s in workload.sent.items()}
    publishes = [(sent[t], workload.answered[t] - t0, r.outcome) for t, r in history.records.items() if t in workload.answered]
    result_points = sorted((a, a - sent[t]) for t, a in arrived.items() if t in sent)
    for w in windows:
        after = [a for t, a in arrived.items() if t in sent and sent[t] >= w.end]
        w.recovery_s = (min(after) - w.end) if after else None
    return RunResult(
        scenario=scenario, seed=seed, duration=duration, report=report, windows=windows,
        publishes=publishes, results=result_points, drain_s=drain_s, notes=notes, expect_loss=expect_loss,
    )
