"""Reply subjects taken from messages must be inboxes (DESIGN.md §10), against a real server."""

from __future__ import annotations

import asyncio
import logging

import nats.errors
import pytest

from broker import collect_results, declare_pool_consumer, declare_streams, decode, jetstream, publish_task
from broker.subjects import is_inbox
from config import NatsConfig, PoolConfig
from supervisor.control import serve_control
from workers import Handler, Worker

VICTIM = "foundation.control.n1.drain"


@pytest.mark.parametrize(("subject", "ok"), [
    ("_INBOX.abc", True), ("_INBOX.UAB.x1.y2", True), ("_INBOX.", False), ("_INBOX.>", False), ("_INBOX.*", False),
    ("_INBOX.a..b", False), ("_INBOXa.b", False), (VICTIM, False), ("$SRV.PING", False), ("_INBOX.a b", False),
])
def test_only_literal_inboxes_are_reply_subjects(subject: str, ok: bool) -> None:
    assert is_inbox(subject) is ok


async def test_a_reply_to_a_control_subject_is_not_sent_but_the_result_is_stored(nc, caplog) -> None:
    js = jetstream(nc)
    await declare_streams(js, NatsConfig())
    cfg = PoolConfig(name="t", handler="workers.examples:echo", concurrency=1)
    await declare_pool_consumer(js, cfg)
    worker = Worker(cfg, "t.0", nc, Handler.load(cfg.handler), fetch_timeout=0.2)
    await worker.bind()
    stop = asyncio.Event()
    runner = asyncio.create_task(worker.run(stop))
    victim = await nc.subscribe(VICTIM)
    inbox = nc.new_inbox()
    replies = await nc.subscribe(inbox)
    # Both subscriptions at the server before any reply can be sent (nats-py
    # may send a flush's PING ahead of buffered SUBs; the second one follows them).
    await nc.flush(timeout=10)
    await nc.flush(timeout=10)
    try:
        with caplog.at_level(logging.WARNING, logger="foundation.broker.replies"):
            async with collect_results(js, "t") as results:
                await publish_task(js, "t", {"n": 1}, task_id="forged", reply_to=VICTIM)
                got = await results.wait_for({"forged"}, timeout=30)
                # A second task, answered to an inbox, on the same worker connection:
                # had the first reply been sent, it would have arrived before this one.
                await publish_task(js, "t", {"n": 2}, task_id="honest", reply_to=inbox)
                assert decode((await replies.next_msg(timeout=30)).data)["task_id"] == "honest"
        assert got["forged"]["ok"] and got["forged"]["result"] == {"n": 1}
        with pytest.raises(nats.errors.TimeoutError):
            await victim.next_msg(timeout=0.05)  # already delivered if it had been sent
        assert any(VICTIM in r.getMessage() and "forged" in r.getMessage() for r in caplog.records)
    finally:
        stop.set()
        await runner


async def test_a_control_request_without_an_inbox_is_not_acted_on(nc, caplog) -> None:
    calls: list[dict] = []

    async def drain(args: dict) -> dict:
        calls.append(args)
        return {"drained": {}}

    service = await serve_control(nc, "n1", {"drain": drain}, spawn=asyncio.get_running_loop().create_task)
    try:
        with caplog.at_level(logging.WARNING, logger="foundation.broker.replies"):
            # A reflected answer (no reply, or a reply that is no inbox) must not drain the node.
            await nc.publish(VICTIM, b"{}", reply="foundation.control.n2.drain")
            await nc.publish(VICTIM, b"{}")
            reply = await nc.request(VICTIM, b'{"pool": "p"}', timeout=10)
        assert decode(reply.data) == {"drained": {}}
        assert calls == [{"pool": "p"}]  # only the request that can be answered
        assert any("foundation.control.n2.drain" in r.getMessage() for r in caplog.records)
    finally:
        await service.stop()
