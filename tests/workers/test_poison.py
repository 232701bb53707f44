"""Tasks that kill their worker end in the DLQ with their attempts and how the
worker died, while the other tasks complete and the node stays up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from broker import (
    collect_results,
    connect,
    encode,
    jetstream,
    publish_task,
    read_stream,
    subjects,
)
from supervisor.control import request
from supervisor.harness import NodeProcess, write_config

pytestmark = pytest.mark.timeout(120)


async def test_tasks_that_kill_their_worker_are_dead_lettered(tmp_path: Path) -> None:
    # One poison per pool, among innocent tasks: a segfault, an os._exit, and
    # a memory blow-up that the RSS quota kills.
    common = {"handler": "tests.handlers:poison", "concurrency": 4, "ack_wait": 1, "max_deliver": 3, "backoff": [0.2, 0.4]}
    cfg = write_config(
        tmp_path / "f.toml",
        pools={
            "p": {**common, "size": 2},
            "x": {**common, "size": 1},
            "m": {**common, "size": 1, "quota": {"max_rss_mb": 120}},
        },
    )
    node = NodeProcess(cfg)
    try:
        node.wait_up()
        url = node.url
        nc = await connect(url, name="client")
        js = jetstream(nc)
        poisons = {"p": ("segv", {"segfault": True}), "x": ("exit", {"exit": True}), "m": ("hog", {"hog": True})}
        innocent = {pool: {f"{pool}{i}" for i in range(40 if pool == "p" else 10)} for pool in poisons}
        async with collect_results(js, ">") as results:
            for pool, (poison_id, poison) in poisons.items():
                for i, task_id in enumerate(sorted(innocent[pool])):
                    await publish_task(js, pool, {"seconds": 0.01}, task_id=task_id)
                    if i == 3:
                        await publish_task(js, pool, poison, task_id=poison_id)
            everything = set().union(*innocent.values()) | {"segv", "exit", "hog"}
            got = await results.wait_for(everything, timeout=60)
        failed = {t for t in everything if not got[t]["ok"]}
        assert failed == {"segv", "exit", "hog"}, {t: got[t].get("error") for t in failed}
        segv, exit_, hog = got["segv"], got["exit"], got["hog"]
        assert segv["attempt"] == exit_["attempt"] == hog["attempt"] == 3
        assert segv["error"].startswith("worker exited: signal SIGSEGV during attempt 3 on p.")
        assert exit_["error"].startswith("worker exited: exit 13 during attempt 3 on x.0")
        assert hog["error"].startswith("worker exited: signal SIGKILL")
        assert "quota rss" in hog["error"] and "during attempt 3 on m.0" in hog["error"]

        for pool, (poison_id, poison) in poisons.items():
            [letter] = await read_stream(js, subjects.DLQ_STREAM, subjects.dlq(pool))
            assert letter.headers[subjects.TASK_ID] == poison_id
            assert letter.headers[subjects.ATTEMPTS] == "3"
            assert letter.headers[subjects.ERROR] == got[poison_id]["error"]
            assert letter.data == encode(poison)
        # Dead-lettered tasks left the work queue; the node is still up.
        assert (await js.stream_info(subjects.TASKS_STREAM)).state.messages == 0
        status = await request(nc, "test", "status")
        assert {w["id"] for w in status["pools"]["p"]["workers"] if w["running"]} == {"p.0", "p.1"}
        assert node.proc.poll() is None
        await nc.close()
    finally:
        assert node.stop() == 0


async def test_a_missed_advisory_is_caught_by_the_sweep(nc) -> None:
    """A task whose deliveries ran out while nobody listened is dead-lettered by a sweep."""
    from broker import declare_pool_consumer, declare_streams
    from config import NatsConfig, PoolConfig
    from workers import AttemptJournal, DeadLetters
    from broker import OutcomeStore

    js = jetstream(nc)
    pool = PoolConfig(name="s", handler="workers.examples:echo", ack_wait=0.3, max_deliver=2, backoff=(0.1,))
    await declare_streams(js, NatsConfig())
    await declare_pool_consumer(js, pool)
    await publish_task(js, "s", {"x": 1}, task_id="orphan")
    await publish_task(js, "s", {"x": 2}, task_id="fine")
    sub = await js.pull_subscribe_bind(durable=subjects.consumer("s"), stream=subjects.TASKS_STREAM)
    # Two deliveries of "orphan", never acked (as if its workers died); "fine" is acked.
    delivered = 0
    while delivered < 2:
        for msg in await sub.fetch(2, timeout=5):
            if msg.headers[subjects.MSG_ID] == "fine":
                await msg.ack_sync()
            else:
                delivered += 1
    # The server gives up on it at its next deadline (a pull must be waiting).
    with pytest.raises(Exception):
        await sub.fetch(1, timeout=1)
    dead = DeadLetters(nc, js, pool, "s.0", OutcomeStore(nc, js, "s"), await AttemptJournal.open(js))
    async with collect_results(js, "s") as results:
        assert await dead.sweep() == []  # first sight: only a suspect
        assert await dead.sweep() == [1]  # still there: dead-lettered
        got = await results.wait_for({"orphan"}, timeout=10)
    assert got["orphan"]["ok"] is False
    assert got["orphan"]["error"].startswith("no attempt of 2 finished and none was journaled")
    [letter] = await read_stream(js, subjects.DLQ_STREAM, "dlq.s")
    assert letter.headers[subjects.TASK_ID] == "orphan" and letter.headers[subjects.ATTEMPTS] == "2"
    assert (await js.stream_info(subjects.TASKS_STREAM)).state.messages == 0
    assert await dead.sweep() == []
    await sub.unsubscribe()
    await asyncio.sleep(0)
