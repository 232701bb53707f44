"""The consume loop against a real nats-server, in this process."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from broker import (
    collect_results,
    declare_pool_consumer,
    declare_streams,
    jetstream,
    publish_task,
    read_stream,
    subjects,
)
from config import NatsConfig, PoolConfig
from workers import Handler, Worker


def pool(handler: str, **kw) -> PoolConfig:
    return PoolConfig(name="t", handler=handler, **{"backoff": (0.01, 0.01), "max_deliver": 3, **kw})


@pytest.fixture
async def js(nc):
    js = jetstream(nc)
    await declare_streams(js, NatsConfig())
    return js


async def run_worker(nc, cfg: PoolConfig, stop: asyncio.Event) -> asyncio.Task:
    await declare_pool_consumer(jetstream(nc), cfg)
    worker = Worker(cfg, f"{cfg.name}.0", nc, Handler.load(cfg.handler), fetch_timeout=0.2)
    await worker.bind()
    return asyncio.create_task(worker.run(stop))


async def test_thousand_tasks_thousand_results(nc, js) -> None:
    cfg = pool("workers.examples:echo", concurrency=16)
    stop = asyncio.Event()
    async with collect_results(js, "t") as results:
        runner = await run_worker(nc, cfg, stop)
        ids = {f"task-{i}" for i in range(1000)}
        await asyncio.gather(*(publish_task(js, "t", {"n": t}, task_id=t) for t in ids))
        got = await results.wait_for(ids, timeout=30)
    stop.set()
    await runner
    assert set(got) == ids
    assert all(r["ok"] and r["result"] == {"n": t} and r["pool"] == "t" and r["worker"] == "t.0" for t, r in got.items())
    assert (await js.stream_info(subjects.TASKS_STREAM)).state.messages == 0


async def test_flaky_succeeds_on_third_attempt(nc, js) -> None:
    cfg = pool("workers.examples:flaky", max_deliver=5, backoff=(0.01, 0.01, 0.01))
    stop = asyncio.Event()
    async with collect_results(js, "t") as results:
        runner = await run_worker(nc, cfg, stop)
        await publish_task(js, "t", {"fail_times": 2}, task_id="f1")
        got = await results.wait_for({"f1"}, timeout=10)
    stop.set()
    await runner
    assert got["f1"]["ok"] is True
    assert got["f1"]["attempt"] == 3
    assert got["f1"]["result"] == {"attempt": 3}


async def test_always_failing_task_is_dead_lettered_with_reason(nc, js) -> None:
    cfg = pool("workers.examples:fail")
    stop = asyncio.Event()
    async with collect_results(js, "t") as results:
        runner = await run_worker(nc, cfg, stop)
        await publish_task(js, "t", {"x": 1}, task_id="bad-1")
        got = await results.wait_for({"bad-1"}, timeout=10)
    stop.set()
    await runner
    assert got["bad-1"]["ok"] is False
    assert got["bad-1"]["error"] == "ValueError: cannot process {'x': 1}"
    [dead] = await read_stream(js, subjects.DLQ_STREAM, "dlq.t")
    assert dead.subject == "dlq.t"
    assert dead.data == b'{"x":1}'
    assert dead.headers[subjects.TASK_ID] == "bad-1"
    assert dead.headers[subjects.POOL] == "t"
    assert dead.headers[subjects.ATTEMPTS] == "3"
    assert dead.headers[subjects.ERROR] == "ValueError: cannot process {'x': 1}"


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"{not json", "InvalidJSONError: body is not valid JSON"),
        (b'"' + b"x" * 200 + b'"', "BodyTooLargeError: body of 202 bytes is over the limit of 100 bytes"),
    ],
)
async def test_bad_body_goes_to_dlq_at_once(nc, js, raw: bytes, error: str) -> None:
    cfg = pool("workers.examples:echo", max_body_bytes=100)
    stop = asyncio.Event()
    async with collect_results(js, "t") as results:
        runner = await run_worker(nc, cfg, stop)
        ack = await publish_task(js, "t", None, raw=raw)
        got = await results.wait_for(1, timeout=10)
    stop.set()
    await runner
    [result] = got.values()
    assert result["task_id"] == f"TASKS:{ack.seq}"
    assert result["ok"] is False and result["error"].startswith(error)
    assert result["attempt"] == 1
    [dead] = await read_stream(js, subjects.DLQ_STREAM, "dlq.t")
    assert dead.data == raw
    assert dead.headers[subjects.ATTEMPTS] == "1"
    assert dead.headers[subjects.ERROR].startswith(error)


async def test_reply_to_gets_the_result_too(nc, js) -> None:
    cfg = pool("workers.examples:echo")
    stop = asyncio.Event()
    runner = await run_worker(nc, cfg, stop)
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await publish_task(js, "t", [1, 2], task_id="r1", reply_to=inbox)
    msg = await sub.next_msg(timeout=10)
    stop.set()
    await runner
    from broker import decode

    body = decode(msg.data)
    assert body["task_id"] == "r1" and body["result"] == [1, 2]


async def test_stop_finishes_in_flight_tasks(nc, js) -> None:
    cfg = dataclasses.replace(pool("workers.examples:sleep"), concurrency=4)
    stop = asyncio.Event()
    ids = {f"s{i}" for i in range(4)}
    await asyncio.gather(*(publish_task(js, "t", {"seconds": 0.3}, task_id=t) for t in ids))

    async def ack_pending(n: int) -> None:
        # Polled: the consumer's state has no event to wait on.
        while (await js.consumer_info(subjects.TASKS_STREAM, subjects.consumer("t"))).num_ack_pending != n:
            await asyncio.sleep(0.01)

    async with collect_results(js, "t") as results:
        runner = await run_worker(nc, cfg, stop)
        await asyncio.wait_for(ack_pending(4), 10)  # all four in hand
        stop.set()
        await asyncio.wait_for(runner, 10)
        await results.wait_for(ids, timeout=10)
    # Their acks were sent before it returned; the server applies them in its own time.
    await asyncio.wait_for(ack_pending(0), 5)
