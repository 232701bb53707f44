"""Resource quotas: the pure check, and real workers recycled or killed by a node."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import pytest

from broker import collect_results, jetstream, publish_task
from config.schema import QuotaConfig
from supervisor.harness import NodeProcess, write_config
from supervisor.quota import HARD_RSS_FACTOR, MB, QuotaCheck, Usage
from tests.supervisor.helpers import EventLog, metric_value

pytestmark = pytest.mark.timeout(120)


# -- the check, fed with samples --------------------------------------------------


def test_rss_over_the_limit_recycles_and_far_over_kills() -> None:
    check = QuotaCheck(QuotaConfig(max_rss_mb=100))
    assert check.update(0.0, Usage(100 * MB, 0.0, 10)) is None
    soft = check.update(0.1, Usage(101 * MB, 0.0, 10))
    assert soft is not None and (soft.kind, soft.hard, soft.limit) == ("rss", False, 100)
    hard = check.update(0.2, Usage(int((100 * HARD_RSS_FACTOR + 1) * MB), 0.0, 10))
    assert hard is not None and hard.hard and hard.describe() == "quota rss: 151 MB > 1.5 x 100 MB"


def test_fds_over_the_limit() -> None:
    check = QuotaCheck(QuotaConfig(max_open_fds=64))
    assert check.update(0.0, Usage(MB, 0.0, 64)) is None
    breach = check.update(0.1, Usage(MB, 0.0, 65))
    assert breach is not None and (breach.kind, breach.value) == ("fds", 65)


def test_cpu_is_judged_as_the_average_over_a_full_window() -> None:
    check = QuotaCheck(QuotaConfig(max_cpu_percent=50, cpu_window=2.0))
    # 100% CPU, but for less than the window: not yet a breach.
    for i in range(20):
        assert check.update(i * 0.1, Usage(MB, i * 0.1, 5)) is None
    breach = check.update(2.0, Usage(MB, 2.0, 5))
    assert breach is not None and breach.kind == "cpu" and breach.value == pytest.approx(100.0)
    assert check.cpu_percent == pytest.approx(100.0)


def test_a_cpu_burst_shorter_than_the_window_is_no_breach() -> None:
    check = QuotaCheck(QuotaConfig(max_cpu_percent=50, cpu_window=2.0))
    cpu = 0.0
    for i in range(60):
        busy = 10 <= i < 18  # 0.8 s at 100% within each 2 s window: 40% average
        cpu += 0.1 if busy else 0.0
        assert check.update(i * 0.1, Usage(MB, cpu, 5)) is None, f"breach at sample {i}"


def test_no_quota_no_breach() -> None:
    check = QuotaCheck(QuotaConfig())
    for i in range(30):
        assert check.update(i * 1.0, Usage(10_000 * MB, i * 1.0, 100_000)) is None


# -- a real node -------------------------------------------------------------


def _metric(text: str, name: str, **labels: str) -> float:
    return metric_value(text, name, **labels) or 0.0


async def test_rss_and_fd_quotas_recycle_gracefully_and_lose_nothing(tmp_path: Path, nats_url: str, nc) -> None:
    events = await EventLog.open(nc)
    one_at_a_time = {"size": 1, "concurrency": 1, "max_restarts": 0, "shutdown": 10}
    cfg = write_config(
        tmp_path / "f.toml",
        nats_url=nats_url,
        metrics={"port": -1},
        pools={
            # A worker starts near 26 MB; each task keeps 20 MB more and takes
            # 0.2 s, so the sampler sees the growth step by step.
            "mem": {"handler": "tests.handlers:hold_memory", **one_at_a_time, "quota": {"max_rss_mb": 100}},
            # A worker starts near 12 fds; each task keeps 10 more open.
            "fds": {"handler": "tests.handlers:hold_fds", **one_at_a_time, "quota": {"max_open_fds": 40}},
        },
    )
    node = NodeProcess(cfg)
    node.wait_up()
    metrics_url = node.metrics_url
    js = jetstream(nc)
    try:
        async with collect_results(js, "mem") as mem, collect_results(js, "fds") as fds:
            mem_ids = {f"m{i}" for i in range(12)}
            fds_ids = {f"f{i}" for i in range(12)}
            for i in range(12):
                await publish_task(js, "mem", {"mb": 20, "seconds": 0.2}, task_id=f"m{i}")
                await publish_task(js, "fds", {"fds": 10, "seconds": 0.2}, task_id=f"f{i}")
            got_mem = await mem.wait_for(mem_ids, timeout=60)
            got_fds = await fds.wait_for(fds_ids, timeout=60)
        # lost = 0: every task has its one successful result.
        assert all(got_mem[t]["ok"] for t in mem_ids) and all(got_fds[t]["ok"] for t in fds_ids)
        for pool, kind in (("mem", "rss"), ("fds", "fds")):
            breach = await events.wait("quota", pool=pool)
            seen = [(e["value"], e["action"], e["pid"]) for e in events.of("quota")]
            assert (breach["child"], breach["quota"], breach["action"]) == (f"{pool}.0", kind, "recycle"), seen
            assert breach["value"] > breach["limit"]
            # Drained (exit 0, not killed), replaced, not counted: max_restarts
            # is 0, so a counted restart would have escalated the pool.
            gone = await events.wait("exit", pid=breach["pid"])
            assert (gone["code"], gone["signal"]) == (0, None)
            assert (await events.wait("restart", child=f"{pool}.0"))["cause"] == "quota"
        assert not events.of("escalate") and node.proc.poll() is None
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(metrics_url, timeout=10).read().decode())
        for pool, kind in (("mem", "rss"), ("fds", "fds")):
            counted = _metric(text, "foundation_quota_breaches_total", pool=pool, kind=kind)
            assert counted == len(events.of("quota", pool=pool)) >= 1
            assert _metric(text, "foundation_worker_restarts_total", pool=pool, reason="quota") >= 1
        assert _metric(text, "foundation_pool_rss_bytes", pool="mem") > 0
    finally:
        assert node.stop() == 0


async def test_a_runaway_allocation_is_killed_mid_task_and_redelivered(tmp_path: Path, nats_url: str, nc) -> None:
    events = await EventLog.open(nc)
    cfg = write_config(
        tmp_path / "f.toml",
        nats_url=nats_url,
        pools={"b": {"handler": "tests.handlers:balloon", "size": 1, "ack_wait": 2, "quota": {"max_rss_mb": 100}}},
    )
    node = NodeProcess(cfg).wait_up()
    js = jetstream(nc)
    try:
        async with collect_results(js, "b") as results:
            await publish_task(js, "b", {"max_mb": 2000}, task_id="runaway")
            # Over the limit, the worker is asked to drain, but its task does
            # not end; past 1.5 x the limit it is SIGKILLed at once, draining
            # or not. (A fast enough balloon skips the first step.)
            kill = await events.wait("quota", pool="b", action="kill")
            assert kill["quota"] == "rss" and kill["value"] > 100 * HARD_RSS_FACTOR
            before = [(e["action"], e["pid"]) for e in events.of("quota", pool="b")][:-1]
            assert before in ([], [("recycle", kill["pid"])])
            gone = await events.wait("exit", pid=kill["pid"])
            assert gone["signal"] == "SIGKILL" and "quota rss" in gone["how"]
            # Its task is redelivered to the replacement and succeeds: lost = 0.
            got = await results.wait_for({"runaway"}, timeout=30)
        # The handler returns only on a redelivery: an ok result means the
        # first attempt was stopped and the task still came through.
        assert got["runaway"]["ok"] and got["runaway"]["result"]["attempt"] >= 2
        assert (await events.wait("restart", child="b.0"))["cause"] == "signal"
    finally:
        assert node.stop() == 0


async def test_sustained_cpu_recycles_after_the_task_in_hand(tmp_path: Path, nats_url: str, nc) -> None:
    events = await EventLog.open(nc)
    cfg = write_config(
        tmp_path / "f.toml",
        nats_url=nats_url,
        pools={"c": {"handler": "tests.handlers:spin", "size": 1, "concurrency": 1,
                     "quota": {"max_cpu_percent": 50, "cpu_window": 0.5}}},
    )
    node = NodeProcess(cfg).wait_up()
    js = jetstream(nc)
    try:
        async with collect_results(js, "c") as results:
            await publish_task(js, "c", {"seconds": 1.5}, task_id="busy")
            breach = await events.wait("quota", pool="c")
            assert (breach["quota"], breach["action"]) == ("cpu", "recycle") and breach["value"] > 50
            # The worker finishes the task it holds before it goes: one result, first attempt.
            got = await results.wait_for({"busy"}, timeout=30)
            gone = await events.wait("exit", pid=breach["pid"])
        assert got["busy"]["ok"] and got["busy"]["attempt"] == 1
        assert (gone["code"], gone["signal"]) == (0, None)
        assert (await events.wait("restart", child="c.0"))["cause"] == "quota"
    finally:
        assert node.stop() == 0


async def test_task_count_quota_recycles_without_counting_and_loses_nothing(tmp_path: Path, nats_url: str, nc) -> None:
    events = await EventLog.open(nc)
    cfg = write_config(
        tmp_path / "f.toml",
        nats_url=nats_url,
        # max_restarts = 0: a single counted restart would escalate the pool.
        pools={"t": {"handler": "workers.examples:echo", "size": 1, "max_tasks_per_child": 5, "max_restarts": 0}},
    )
    node = NodeProcess(cfg).wait_up()
    js = jetstream(nc)
    try:
        ids = {f"n{i}" for i in range(20)}
        async with collect_results(js, "t") as results:
            await asyncio.gather(*(publish_task(js, "t", {"i": t}, task_id=t) for t in ids))
            got = await results.wait_for(ids, timeout=60)
        assert all(r["ok"] and r["attempt"] == 1 for r in got.values())
        # Five tasks per process: 20 tasks, four processes asked to be replaced.
        await events.wait("restart", count=4, child="t.0", cause="recycle")
        exits = events.of("exit", child="t.0")
        assert [(e["code"], e["restart"]) for e in exits] == [(100, True)] * 4
        assert len({e["pid"] for e in exits}) == 4
        assert not events.of("escalate") and node.proc.poll() is None
    finally:
        assert node.stop() == 0
