"""Soft time limits interrupt the handler; a hard limit recycles the worker and the task is retried."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from broker import (
    collect_results,
    connect,
    declare_pool_consumer,
    declare_streams,
    jetstream,
    publish_task,
    read_stream,
    subjects,
)
from config import NatsConfig, PoolConfig
from supervisor.harness import NodeProcess, write_config
from workers import Handler, Middleware, Outcome, StateStore, Task, Worker, agent_key

pytestmark = pytest.mark.timeout(120)


class Kinds(Middleware):
    """Records the outcome kind of every delivery."""

    def __init__(self) -> None:
        self.kinds: list[str] = []

    def after_task(self, task: Task, outcome: Outcome) -> None:
        self.kinds.append(outcome.kind)


async def run_one(nc, handler: str, payload: dict[str, Any], kinds: Kinds | None = None, **kw: Any) -> dict[str, Any]:
    """Run one task through an in-process worker (stopped once it is done); its result body."""
    js = jetstream(nc)
    await declare_streams(js, NatsConfig())
    cfg = PoolConfig(name="t", handler=handler, **{"max_deliver": 1, "backoff": (), **kw})
    await declare_pool_consumer(js, cfg)
    worker = Worker(cfg, "t.0", nc, Handler.load(cfg.handler), fetch_timeout=0.2, middleware=[kinds or Kinds()])
    await worker.bind()
    stop = asyncio.Event()
    runner = asyncio.create_task(worker.run(stop))
    async with collect_results(js, "t") as results:
        await publish_task(js, "t", payload, task_id="limited")
        got = await results.wait_for({"limited"}, timeout=30)
    stop.set()
    await runner
    return got["limited"]


async def test_soft_limit_cancels_an_async_handler(nc) -> None:
    body = await run_one(nc, "tests.handlers:nap", {"seconds": 30}, time_limit=0.3)
    assert body["ok"] is False
    assert body["error"] == "SoftTimeLimitExceeded: the handler ran over its soft time limit of 0.3s"
    [letter] = await read_stream(jetstream(nc), subjects.DLQ_STREAM, "dlq.t")
    assert letter.headers[subjects.ERROR] == body["error"]


async def test_a_handler_may_catch_the_soft_limit_and_return(nc) -> None:
    body = await run_one(nc, "tests.handlers:nap", {"seconds": 30, "catch": True}, time_limit=0.3)
    assert body["ok"] is True and body["result"] == {"cleaned_up": True}


async def test_soft_limit_interrupts_a_sync_handler_in_its_thread(nc) -> None:
    # Left alone, busy_wait would return normally after 30 s: an error proves
    # the exception was raised inside the handler's thread.
    body = await run_one(nc, "tests.handlers:busy_wait", {"seconds": 30}, time_limit=0.3)
    assert body["ok"] is False
    assert body["error"] == "SoftTimeLimitExceeded: the handler ran over its soft time limit of 0.3s"


async def test_heartbeats_keep_a_long_task_from_being_redelivered(nc) -> None:
    # Three times ack_wait, in a worker with room for a second copy: without
    # heartbeats the server would hand the task out again after one second.
    kinds = Kinds()
    body = await run_one(nc, "tests.handlers:slow", {"seconds": 3}, kinds, ack_wait=1, concurrency=2, max_deliver=3)
    assert body["ok"] is True and body["attempt"] == 1
    assert kinds.kinds == ["ok"]  # one delivery, no second copy


async def test_hard_limit_recycles_the_worker_and_the_task_is_retried(tmp_path: Path) -> None:
    # stuck_first blocks in one C call on its first attempt, out of the soft limit's reach.
    cfg = write_config(
        tmp_path / "f.toml",
        pools={"h": {"handler": "tests.handlers:stuck_first", "size": 1, "concurrency": 4, "ack_wait": 2,
                     "time_limit": 0.3, "hard_time_limit": 1.0, "max_deliver": 3, "backoff": [0.2, 0.2],
                     "max_restarts": 1}},
    )
    node = NodeProcess(cfg)
    try:
        node.wait_up()
        url = node.url
        nc = await connect(url, name="client")
        js = jetstream(nc)
        async with collect_results(js, "h") as results:
            await publish_task(js, "h", {"seconds": 60}, task_id="stuck")
            got = await results.wait_for({"stuck"}, timeout=60)
            # The recycled slot serves new tasks as usual.
            await publish_task(js, "h", {}, task_id="after")
            got = await results.wait_for({"stuck", "after"}, timeout=30)
        assert got["stuck"]["ok"] is True and got["stuck"]["attempt"] == 2
        assert got["after"]["ok"] is True
        node.wait_line("recycling (hard_time_limit)", timeout=10)
        # The stuck attempt never counted; the retry and the next task did.
        assert (await (await StateStore.open(js)).load(agent_key("test", "h.0"))).state == {"count": 2}
        # Recycling is not a crash: one allowed restart was not used up.
        assert node.proc.poll() is None
        await nc.close()
    finally:
        assert node.stop() == 0
