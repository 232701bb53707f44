"""Cluster-wide quotas in running nodes: every task of a limited pool is paid for from the shared budget."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from broker import collect_results, jetstream, publish_task
from protocols.quota import Ledger
from tests.supervisor.cluster import start_node, stop_all

pytestmark = pytest.mark.timeout(120)

RATE = 20  # tokens per second, so per 1 s window


async def test_rate_and_concurrency_budgets_hold_across_two_nodes(tmp_path: Path, nats_url: str, nc) -> None:
    pools = {
        "q": {"handler": "tests.handlers:slow", "size": 2, "concurrency": 4, "quota": {"rate_per_s": RATE}},
        "c": {"handler": "tests.handlers:timed", "size": 2, "concurrency": 4, "quota": {"max_concurrency": 2}},
    }
    a = await start_node(tmp_path, "a", nats_url, {k: {**v, "quota": dict(v["quota"])} for k, v in pools.items()})
    b = await start_node(tmp_path, "b", nats_url, {k: {**v, "quota": dict(v["quota"])} for k, v in pools.items()})
    js = jetstream(nc)
    try:
        rated = {f"r{i}" for i in range(4 * RATE)}
        limited = {f"c{i}" for i in range(8)}
        async with collect_results(js, "q") as q_results, collect_results(js, "c") as c_results:
            await asyncio.gather(*(publish_task(js, "q", {"seconds": 0}, task_id=t) for t in sorted(rated)))
            await asyncio.gather(*(publish_task(js, "c", {"seconds": 0.3}, task_id=t) for t in sorted(limited)))
            done = await q_results.wait_for(rated, timeout=60)
            timed = await c_results.wait_for(limited, timeout=60)
        assert all(r["ok"] for r in done.values()) and all(r["ok"] for r in timed.values())
        # Four workers on two nodes shared one budget: the ledger's own records show
        # no window granted more than RATE tokens, and every task was paid for, so
        # the tasks needed at least four windows.
        windows = await (await Ledger.open(nc, "q")).windows()
        assert all(w.budget == RATE and w.granted <= RATE for w in windows), [(w.index, w.granted) for w in windows]
        assert sum(w.granted for w in windows) >= len(rated)
        assert len([w for w in windows if w.granted]) >= len(rated) // RATE
        assert {g.holder.split(".")[0] for w in windows for g in w.grants} <= {"a", "b"}
        # At most two handler calls of pool c ran at once, out of 16 the workers could run.
        edges = sorted([(r["result"]["start"], 1) for r in timed.values()] + [(r["result"]["end"], -1) for r in timed.values()])
        running = peak = 0
        for _, step in edges:
            running += step
            peak = max(peak, running)
        assert 1 <= peak <= 2
        slots = await (await Ledger.open(nc, "c")).slots(2)
        assert slots.held <= 2
    finally:
        assert await stop_all(a, b) == [0, 0]
