"""Coordination metrics: rounds counted by outcome; rounds run outside a node forwarded to one."""

from __future__ import annotations

import asyncio
import json

import pytest

from protocols import metrics
from protocols.metrics import FORWARD_SUBJECT, ROUNDS, count_forwarded, forward, timed_round


def _rounds(protocol: str, outcome: str) -> float:
    return ROUNDS.labels(protocol, outcome)._value.get()


async def test_a_round_counts_its_outcome_and_a_raising_round_counts_as_timeout_or_error() -> None:
    @timed_round("lock", "acquired")
    async def ok() -> int:
        return 1

    @timed_round("lock", "acquired")
    async def late() -> None:
        raise asyncio.TimeoutError

    @timed_round("lock", "acquired")
    async def broken() -> None:
        raise ValueError("no")

    before = {o: _rounds("lock", o) for o in ("acquired", "timeout", "error")}
    assert await ok() == 1
    with pytest.raises(asyncio.TimeoutError):
        await late()
    with pytest.raises(ValueError):
        await broken()
    assert {o: _rounds("lock", o) - before[o] for o in before} == {"acquired": 1, "timeout": 1, "error": 1}


async def test_rounds_outside_a_node_are_forwarded_and_counted_once(nc) -> None:
    metrics._unreported.clear()

    @timed_round("consensus", lambda d: d)
    async def vote(outcome: str) -> str:
        return outcome

    await vote("accepted")
    await vote("rejected")
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def receive(msg) -> None:
        got.put_nowait(msg.data)

    sub = await nc.subscribe(FORWARD_SUBJECT, cb=receive)
    await nc.flush()
    assert await forward(nc) == 2
    assert await forward(nc) == 0  # nothing left to report
    data = await asyncio.wait_for(got.get(), 10)
    await sub.unsubscribe()
    before = _rounds("consensus", "accepted"), _rounds("consensus", "rejected")

    assert count_forwarded(data) == 2
    assert (_rounds("consensus", "accepted") - before[0], _rounds("consensus", "rejected") - before[1]) == (1, 1)


def test_forwarded_garbage_and_unknown_labels_are_ignored() -> None:
    before = _rounds("consensus", "accepted")
    assert count_forwarded(b"not json") == 0
    assert count_forwarded(json.dumps({"a": 1}).encode()) == 0
    junk = [["round", "made-up", "accepted", 0.1], ["round", "consensus", "made-up", 0.1], ["auction", "made-up", "", 0.1],
            ["round", "consensus"], ["round", "consensus", "accepted", "slow"],
            ["round", "consensus", "accepted", -1], ["round", "consensus", "accepted", float("nan")], 7]
    assert count_forwarded(json.dumps(junk).encode()) == 0
    assert count_forwarded(json.dumps([["round", "consensus", "accepted", 0.5]]).encode()) == 1
    assert _rounds("consensus", "accepted") - before == 1
