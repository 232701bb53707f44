"""Max-deliveries advisories any client could publish: malformed ones are skipped, a flood is bounded."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from broker import OutcomeStore, declare_pool_consumer, declare_streams, jetstream
from config import NatsConfig, PoolConfig
from workers import AttemptJournal, DeadLetters
from workers.deadletter import MAX_ADVISORY_TASKS, advisory_subject


@dataclass
class _Msg:
    data: bytes
    subject: str


async def test_a_flood_of_advisories_holds_a_bounded_number_of_tasks(nc) -> None:
    js = jetstream(nc)
    pool = PoolConfig(name="s", handler="workers.examples:echo")
    await declare_streams(js, NatsConfig())
    await declare_pool_consumer(js, pool)
    dead = DeadLetters(nc, js, pool, "s.0", OutcomeStore(nc, js, "s"), await AttemptJournal.open(js))
    subject = advisory_subject("s")
    for body in (b"\xff", b"[]", json.dumps({"stream_seq": 2**70}).encode(), json.dumps({"stream_seq": -1}).encode(),
                 json.dumps({"stream_seq": "x"}).encode()):
        await dead._on_advisory(_Msg(body, subject))  # type: ignore[arg-type]
    assert not dead._tasks
    # Nothing awaits between these calls: every task spawned is still in hand.
    for seq in range(1, 10 * MAX_ADVISORY_TASKS):
        await dead._on_advisory(_Msg(json.dumps({"stream_seq": seq, "deliveries": 5}).encode(), subject))  # type: ignore[arg-type]
    assert len(dead._tasks) == MAX_ADVISORY_TASKS
    await asyncio.gather(*dead._tasks)  # no such tasks in the stream: each ends at once
    assert not dead._tasks
