"""A vote handler runs under the pool's time limit, a few at a time: proposals cannot starve tasks."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from config.schema import PoolConfig
from protocols.consensus import ABSTAIN, propose
from workers.agent import VOTE_CONCURRENCY, WorkerAgent
from workers.handler import Handler

pytestmark = pytest.mark.timeout(60)


class _Loop:
    in_flight = 0
    processed = 0


class StuckVoter:
    """A sync handler that never finishes a vote (until interrupted) and answers tasks at once."""

    def __init__(self) -> None:
        self.voting = 0
        self.most = 0
        self._lock = threading.Lock()

    def __call__(self, payload: dict[str, Any], ctx: Any) -> Any:
        if "proposal" not in payload:
            return payload
        with self._lock:
            self.voting += 1
            self.most = max(self.most, self.voting)
        try:
            while True:
                time.sleep(0.01)  # busy in Python code: the soft time limit's exception lands here
        finally:
            with self._lock:
                self.voting -= 1


async def test_votes_are_cut_at_the_time_limit_and_leave_threads_for_tasks(nc) -> None:
    fn = StuckVoter()
    handler = Handler(fn, threads=4)
    pool = PoolConfig(name="p", handler="x:y", capabilities=("vote:slow",), time_limit=0.3)
    agent = WorkerAgent(nc, pool, "p.0", "n1", handler)
    await agent.start(_Loop(), asyncio.Event())  # type: ignore[arg-type]
    try:
        rounds = [asyncio.create_task(propose(nc, "slow", i, participants=[agent.id], deadline=10)) for i in range(8)]
        async with asyncio.timeout(20):
            while fn.voting < VOTE_CONCURRENCY:
                await asyncio.sleep(0.01)  # polling a counter the handler threads update
        # Votes hold at most VOTE_CONCURRENCY threads: a task still runs at once.
        assert await asyncio.wait_for(handler.start({"task": 1}, None).future, 5) == {"task": 1}
        decisions = await asyncio.gather(*rounds)
        for decision in decisions:
            assert decision.abstain == [agent.id]
            assert "time limit" in decision.reasons[agent.id]
        assert fn.most <= VOTE_CONCURRENCY
        assert ABSTAIN == "abstain"
    finally:
        await agent.stop()
        handler.close()
