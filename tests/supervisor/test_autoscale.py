"""Autoscaling: the hysteresis policy, and a real pool following its backlog."""

from __future__ import annotations

import asyncio

import pytest

from broker import (
    collect_results,
    declare_pool_consumer,
    declare_streams,
    jetstream,
    publish_task,
    subjects,
)
from config.schema import NatsConfig, PoolConfig
from supervisor.autoscale import AutoscalePolicy, Autoscaler
from supervisor.pool import PoolSupervisor
from workers.process import WorkerSpec

pytestmark = pytest.mark.timeout(90)


def policy(**kw: int) -> AutoscalePolicy:
    return AutoscalePolicy(**{"min_size": 1, "max_size": 8, "concurrency": 4, "up_after": 2, "down_after": 3, **kw})


def test_one_busy_sample_is_not_enough_two_are() -> None:
    p = policy()
    assert p.decide(1, pending=20, in_flight=4) == 1
    # Straight to the size that holds the backlog: ceil(24 / 4) = 6.
    assert p.decide(1, pending=20, in_flight=4) == 6


def test_growth_is_capped_at_max_size() -> None:
    p = policy(max_size=3)
    p.decide(1, 1000, 4)
    assert p.decide(1, 1000, 4) == 3
    assert p.decide(3, 1000, 12) == 3 and p.decide(3, 1000, 12) == 3


def test_shrinks_one_at_a_time_after_a_quiet_stretch_and_a_blip_resets_it() -> None:
    p = policy()
    assert [p.decide(4, 0, 1) for _ in range(2)] == [4, 4]
    assert p.decide(4, 0, 8) == 4  # half busy: not quiet, the count starts over
    assert [p.decide(4, 0, 1) for _ in range(3)] == [4, 4, 3]
    assert [p.decide(3, 0, 0) for _ in range(3)] == [3, 3, 2]
    assert [p.decide(2, 0, 0) for _ in range(3)] == [2, 2, 1]
    assert [p.decide(1, 0, 0) for _ in range(5)] == [1] * 5  # never below min_size


def test_between_thresholds_nothing_changes() -> None:
    p = policy()
    assert {p.decide(4, pending=2, in_flight=10) for _ in range(20)} == {4}  # load 0.75


def test_scale_to_zero_and_back() -> None:
    p = policy(min_size=0)
    assert [p.decide(1, 0, 0) for _ in range(3)] == [1, 1, 0]
    assert p.decide(0, 0, 0) == 0
    assert [p.decide(0, 5, 0) for _ in range(2)] == [0, 2]


def test_a_size_outside_the_bounds_is_brought_back_at_once() -> None:
    assert policy(min_size=2).decide(1, 0, 0) == 2
    assert policy(max_size=3).decide(5, 0, 0) == 3


async def test_a_pool_grows_under_backlog_and_shrinks_when_idle(nats_url: str, nc) -> None:
    cfg = PoolConfig(name="auto", handler="tests.handlers:slow", size=1, concurrency=2, min_size=1, max_size=4)
    js = jetstream(nc)

    async def prepare(pool: PoolConfig) -> None:
        await declare_streams(js, NatsConfig(url=nats_url))
        await declare_pool_consumer(js, pool)

    pool = PoolSupervisor(cfg, spec_for=lambda slot: WorkerSpec(cfg, slot, nats_url, "test"), prepare=prepare)

    async def lag() -> tuple[int, int]:
        info = await js.consumer_info(subjects.TASKS_STREAM, subjects.consumer("auto"))
        return info.num_pending, info.num_ack_pending

    sizes: list[int] = []
    changed = asyncio.Event()

    def on_scale(size: int) -> None:
        sizes.append(size)
        changed.set()

    async def until_size(size: int) -> None:
        while not sizes or sizes[-1] != size:
            changed.clear()
            await changed.wait()

    scaler = Autoscaler(pool, lag, on_scale, interval=0.1, policy=AutoscalePolicy(1, 4, 2, up_after=2, down_after=5))
    await pool.start()
    running = asyncio.create_task(scaler.run())
    try:
        ids = {f"a{i}" for i in range(200)}
        async with collect_results(js, "auto") as results:
            await asyncio.gather(*(publish_task(js, "auto", {"seconds": 0.05}, task_id=t) for t in ids))
            await asyncio.wait_for(until_size(4), 20)
            got = await results.wait_for(ids, timeout=60)
        assert all(r["ok"] for r in got.values())
        assert {r["worker"] for r in got.values()} == {"auto.0", "auto.1", "auto.2", "auto.3"}
        await asyncio.wait_for(until_size(1), 30)
        assert sizes == [4, 3, 2, 1]
        assert [c.id for c in pool.children] == ["auto.0"]
    finally:
        running.cancel()
        await pool.stop()
