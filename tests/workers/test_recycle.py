"""``max_tasks_per_child`` and ``max_age_s`` recycle workers under load: nothing
lost, nothing processed twice because of a recycle."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from broker import connect, decode, jetstream, read_stream, subjects
from chaos import Workload, check, observe
from supervisor.harness import NodeProcess, write_config

pytestmark = pytest.mark.timeout(120)


async def drained(js, pool: str, n: int, timeout: float = 60) -> None:
    """Wait until ``n`` results of ``pool`` are stored (polled: no event for it)."""
    async def count() -> int:
        info = await js.stream_info(subjects.RESULTS_STREAM, subjects_filter=subjects.results(pool))
        return (info.state.subjects or {}).get(subjects.results(pool), 0)

    async def wait() -> None:
        while await count() < n:
            await asyncio.sleep(0.1)

    await asyncio.wait_for(wait(), timeout)


async def test_recycling_under_load_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    common = {"handler": "chaos.handlers:count", "size": 2, "concurrency": 8, "ack_wait": 5, "max_restarts": 1}
    cfg = write_config(
        tmp_path / "f.toml",
        pools={"n": {**common, "max_tasks_per_child": 50}, "a": {**common, "max_age_s": 0.5}},
    )
    node = NodeProcess(cfg)
    try:
        node.wait_up()
        url = node.url
        nc = await connect(url, name="client")
        js = jetstream(nc)
        by_count = Workload(js, "n", 1000, payload=lambda i: {"i": i, "work_ms": 1})

        async def pace(i: int) -> None:
            await asyncio.sleep(0.002)  # ~2 s of steady load: several lifetimes of 0.5 s

        by_age = Workload(js, "a", 1000, payload=lambda i: {"i": i})
        history_n, history_a = await asyncio.gather(by_count.run(), by_age.run(pace))
        for pool, history in (("n", history_n), ("a", history_a)):
            await drained(js, pool, 1000)
            report = check(history, await observe(js, pool))
            assert report.acked == 1000 and report.lost == [] and report.unexpected == []
            assert report.completed == 1000 and report.duplicates_stored == 0
            assert report.duplicates_processed == 0 and report.missing_effects == 0, report.per_agent
            # A recycle hands nothing back half done: every task ran on its first delivery.
            results = await read_stream(js, subjects.RESULTS_STREAM, subjects.results(pool))
            assert {m.headers[subjects.MSG_ID]: decode(m.data)["attempt"] for m in results} == {t: 1 for t in history.ids()}
        output = "".join(node.output)
        assert output.count("recycling (max_tasks_per_child) after 50 task(s)") >= 1000 // 50 - 2
        assert output.count("recycling (max_age_s)") >= 2
        assert node.proc.poll() is None  # recycles are not restarts: max_restarts = 1 was never spent
        await nc.close()
    finally:
        assert node.stop() == 0
