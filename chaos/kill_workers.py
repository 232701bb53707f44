"""Scenario ``kill-workers``: ``kill -9`` random workers while tasks flow.

1. Open a result collector, then publish ``tasks`` tasks (unique ids, every
   publish outcome recorded) to a pool whose handler counts, per agent, the
   tasks it applied (:mod:`chaos.handlers`).
2. Meanwhile, each time another ``tasks / (kills + 1)`` results have come
   in, SIGKILL one running worker of the pool chosen at random (pids from
   the node's control service), and wait until its slot runs again.
3. Once the workload is published and every kill made, wait until each
   acked task has a result (dead-lettered tasks get one too): the *time to
   drain* runs from that moment.
4. Read the results, dead letters and per-agent counts stored since the
   run began (a node may have run others before); run the checker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from broker import collect_results, connect, jetstream, subjects
from chaos.checker import Report, check
from chaos.errors import ChaosError
from chaos.history import ACKED
from chaos.observe import drop_uncounted, effects_of, next_seq, observe, require_pool
from chaos.run import wait_results
from chaos.workload import Workload
from config.errors import FoundationError
from supervisor.control import request

log = logging.getLogger("foundation.chaos")

class ScenarioError(ChaosError):
    """The scenario could not run to its end (the node went away, no outcome in time)."""


@dataclass
class KillWorkersResult:
    """What a run did and what the checker found."""

    report: Report
    tasks: int
    kills: int
    publish_s: float
    drain_s: float
    killed: list[str] = field(default_factory=list)  # slot ids, in kill order
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"scenario kill-workers: {self.tasks} tasks, {self.kills} kills (kill -9 of {', '.join(sorted(set(self.killed))) or 'none'})",
            f"publish time: {self.publish_s:.2f}s; time to drain: {self.drain_s:.2f}s",
            *(f"note: {n}" for n in self.notes),
            *self.report.lines(),
        ]


async def worker_pids(nc: Any, node: str, pool: str, attempts: int = 5) -> dict[str, int]:
    """Running workers of ``pool`` on ``node``: slot id -> pid."""
    for attempt in range(attempts):
        try:
            status = await request(nc, node, "status")
            break
        except FoundationError as exc:  # a status request can fail under load; ask again
            if attempt == attempts - 1:
                raise ScenarioError(f"node {node} does not answer status requests: {exc}") from exc
            await asyncio.sleep(0.1)
    return {w["id"]: w["pid"] for w in status["pools"][pool]["workers"] if w.get("pid") and w.get("running", True)}


async def _respawned(nc: Any, node: str, pool: str, slot: str, old_pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = (await worker_pids(nc, node, pool)).get(slot)
        if pid not in (None, old_pid):
            return
        # Polling the control service: a respawn publishes no event we could await here.
        await asyncio.sleep(0.05)
    raise ScenarioError(f"slot {slot} did not come back within {timeout:g}s after kill -9")


async def kill_workers(
    url: str,
    node: str,
    pool: str,
    *,
    tasks: int,
    kills: int,
    work_ms: float = 0.0,
    seed: int | None = None,
    drain_timeout: float = 300.0,
    quiet_s: float = 30.0,
    is_alive: Any = None,
) -> KillWorkersResult:
    """Run the scenario against ``pool`` of a running ``node`` reachable at ``url``.

    Args:
        tasks: tasks to publish.
        kills: workers to ``kill -9`` during the run (spread over it).
        work_ms: simulated work per task, passed in the payload.
        seed: for the choice of victims.
        drain_timeout: seconds to wait for the last outcomes.
        quiet_s: stop waiting for outcomes after this long without a new one.
        is_alive: returns False if the node died (the run stops early).

    Raises:
        ScenarioError: the node went away, or outcomes did not arrive in time.
    """
    rng = random.Random(seed)
    nc = await connect(url, name="chaos kill-workers")
    js = jetstream(nc, timeout=10)
    killed: list[str] = []
    try:
        await require_pool(js, pool, url)
        # Only this run's outcomes and effects count: the node may have run others before.
        results_from = await next_seq(js, subjects.RESULTS_STREAM)
        dead_from = await next_seq(js, subjects.DLQ_STREAM)
        baseline = await effects_of(js, pool)
        workload = Workload(js, pool, tasks, payload=lambda i: {"i": i, "work_ms": work_ms})
        async with collect_results(js, pool) as results:

            async def killer() -> None:
                step = max(1, tasks // (kills + 1))
                for k in range(kills):
                    # A stalled pipeline does not stop the kills; the checker judges it.
                    await wait_results(results, (k + 1) * step, quiet_s=quiet_s, timeout=drain_timeout)
                    while True:
                        pids = await worker_pids(nc, node, pool)
                        if not pids:
                            raise ScenarioError(f"no running worker in pool {pool} to kill")
                        slot = rng.choice(sorted(pids))
                        try:
                            os.kill(pids[slot], signal.SIGKILL)
                            break
                        except ProcessLookupError:  # it exited since the status reply; pick again
                            continue
                    killed.append(slot)
                    await _respawned(nc, node, pool, slot, pids[slot], timeout=60)

            kill_task = asyncio.create_task(killer())
            history = await workload.run()
            await kill_task
            drain_from = time.monotonic()
            acked = history.ids(ACKED)
            if not await wait_results(results, acked, quiet_s=quiet_s, timeout=drain_timeout):
                # Not a verdict: the checker below reads the streams themselves
                # and reports whatever is really missing as lost.
                missing = len(acked - set(results.results))
                log.warning("%d acked task(s) without an outcome seen after %gs without progress; checking the streams", missing, quiet_s)
            drain_s = time.monotonic() - drain_from
        if is_alive is not None and not is_alive():
            raise ScenarioError("the node exited during the run")
        seen = await observe(js, pool, results_from=results_from, dead_from=dead_from, baseline=baseline)
        note = drop_uncounted(seen, pool)
        report = check(history, seen)
        return KillWorkersResult(
            report=report, tasks=tasks, kills=len(killed), publish_s=workload.finished - workload.started,
            drain_s=drain_s, killed=killed, notes=[note] if note else [],
        )
    finally:
        await nc.close()
