"""The worker's agent side in one process against a real nats-server: registry, quota gate, variables, votes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from config.schema import PoolConfig, QuotaConfig
from protocols.consensus import ABSTAIN, NO, YES, Ballot, ConsensusError, propose
from protocols.quota import Budget, Ledger, open_quota_service
from protocols.registry import Status, open_registry
from protocols.variables import (
    ChangeRequest,
    FloatVar,
    ParameterSpace,
    VariableStore,
    Verdict,
    open_variables_bucket,
)
from tests import handlers
from workers.agent import (
    LiveVariables,
    WorkerAgent,
    ballot_of,
    quota_batch,
    vote_groups,
)
from workers.handler import Handler

pytestmark = pytest.mark.timeout(60)


@dataclass
class _Loop:
    """What the agent reads of the consume loop."""

    in_flight: int = 0
    processed: int = 0


class _Approve:
    async def approve(self, change: ChangeRequest) -> Verdict:
        return Verdict(True, "approved by the test")


def pool(**extra: object) -> PoolConfig:
    return PoolConfig(name="p", handler="tests.handlers:judge", **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize("answer, ballot", [
    (True, Ballot(YES)), (False, Ballot(NO)), ("abstain", Ballot(ABSTAIN)),
    ({"vote": "no", "reason": "too much"}, Ballot(NO, "too much")),
])
def test_handler_answers_become_ballots(answer: object, ballot: Ballot) -> None:
    assert ballot_of(answer) == ballot


@pytest.mark.parametrize("answer", [None, 1, "maybe", {"vote": "perhaps"}, {"n": 1}])
def test_other_answers_are_no_ballot(answer: object) -> None:
    with pytest.raises(ConsensusError, match=r"a vote handler returns true/false, 'yes'/'no'/'abstain'"):
        ballot_of(answer)


def test_vote_groups_and_quota_batches() -> None:
    assert vote_groups(("echo", "vote:budget", "vote:", "variables", "vote:ops")) == ["budget", "ops"]
    assert quota_batch(pool()) == 1
    assert quota_batch(pool(quota=QuotaConfig(rate_per_s=20))) == 2  # a tenth of a 20-token window
    assert quota_batch(pool(concurrency=4, quota=QuotaConfig(rate_per_s=1000))) == 4  # no more than in flight
    assert quota_batch(pool(quota=QuotaConfig(rate_per_s=0.5))) == 1


async def test_live_variables_follow_the_bucket(nc) -> None:
    live = LiveVariables()
    assert (len(live), dict(live), "lr" in live) == (0, {}, False)
    space = ParameterSpace([FloatVar("lr", 0.01, 0.0001, 1.0)])
    kv = await open_variables_bucket(nc.jetstream())
    store = VariableStore(kv, space, _Approve())
    await store.declare()
    agent = WorkerAgent(nc, pool(), "p.0", "n1", Handler(handlers.judge), registry_ttl=5)
    stop = asyncio.Event()
    await agent.start(_Loop(), stop)  # type: ignore[arg-type]
    try:
        assert dict(agent.variables) == {"lr": 0.01}
        with pytest.raises(KeyError):
            agent.variables["momentum"]
        await store.propose("lr", 0.2)
        view = agent.variables._view
        assert view is not None
        await view.wait_for("lr", lambda v: v == 0.2, timeout=5)
        assert agent.variables["lr"] == 0.2
    finally:
        await agent.stop()


async def test_registered_while_running_draining_on_stop_and_gone_after(nc) -> None:
    loop = _Loop()
    agent = WorkerAgent(nc, pool(capabilities=("echo",)), "p.0", "n1", Handler(handlers.judge), registry_ttl=3)
    stop = asyncio.Event()
    async with open_registry(nc) as registry:
        await agent.start(loop, stop)  # type: ignore[arg-type]
        try:
            await registry.wait_for(lambda c: "n1.p.0" in c, timeout=2)  # another cache: it comes by the watch
            entry = registry.lookup("n1.p.0")
            assert entry is not None and (entry.pool, entry.node, entry.status, entry.capabilities) == (
                "p", "n1", Status.READY, {"echo"})
            loop.in_flight, loop.processed = 2, 7  # heartbeats carry the consume loop's load
            await registry.wait_for(lambda c: (e := registry.lookup("n1.p.0")) is not None and e.status == Status.BUSY
                                    and (e.load.in_flight, e.load.processed) == (2, 7), timeout=5)
            stop.set()  # SIGTERM: draining is announced at once, not at the next beat
            await registry.wait_for(lambda c: registry.lookup("n1.p.0").status == Status.DRAINING, timeout=2)
        finally:
            await agent.stop()
        await registry.wait_for(lambda c: registry.lookup("n1.p.0") is None, timeout=2)


async def test_a_vote_capability_makes_the_handler_a_voter(nc) -> None:
    agents = [WorkerAgent(nc, pool(capabilities=("vote:budget",)), f"p.{n}", "n1", Handler(handlers.judge))
              for n in range(3)]
    for agent in agents:
        await agent.start(_Loop(), asyncio.Event())  # type: ignore[arg-type]
    try:
        voters = [a.id for a in agents]
        accepted = await propose(nc, "budget", {"amount": 10}, participants=voters, deadline=5)
        assert (accepted.outcome, accepted.yes) == ("accepted", voters)
    finally:
        for agent in agents:
            await agent.stop()


async def test_the_gate_takes_a_token_per_call_and_holds_a_slot_during_it(nc) -> None:
    cfg = pool(quota=QuotaConfig(rate_per_s=50, max_concurrency=1))
    agent = WorkerAgent(nc, cfg, "p.0", "n1", Handler(handlers.judge))
    assert agent.gate is not None and WorkerAgent(nc, pool(), "p.1", "n1", Handler(handlers.judge)).gate is None
    async with open_quota_service(nc, "p", Budget.from_config(cfg.quota), name="n1") as service:
        await service.leading.wait()
        try:
            for _ in range(3):
                async with agent.gate():
                    assert agent.quota is not None and agent.quota._slots_in_use == 1
            assert agent.quota._slots_in_use == 0 and agent.quota.tokens_used == 3
            windows = await (await Ledger.open(nc, "p")).windows()
            assert {g.holder for w in windows for g in w.grants} == {"n1.p.0"}
        finally:
            await agent.stop()


async def test_only_agents_that_read_the_registry_keep_a_copy_of_it(nc) -> None:
    writer = WorkerAgent(nc, pool(), "p.0", "n1", Handler(handlers.judge))
    reader = WorkerAgent(nc, pool(), "p.1", "n1", Handler(handlers.judge), watch_registry=True)
    market = WorkerAgent(nc, pool(dispatch="market"), "p.2", "n1", Handler(handlers.judge))
    assert (writer.watch_registry, reader.watch_registry, market.watch_registry) == (False, True, True)
    await writer.start(_Loop(), asyncio.Event())  # type: ignore[arg-type]
    await reader.start(_Loop(), asyncio.Event())  # type: ignore[arg-type]
    try:
        assert reader.registry is not None and writer.registry is not None
        await reader.registry.wait_for(lambda c: "n1.p.0" in c and "n1.p.1" in c, timeout=5)
        assert [e.id for e in writer.registry.entries()] == ["n1.p.0"]  # its own write, nothing else
    finally:
        await reader.stop()
        await writer.stop()
