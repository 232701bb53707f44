"""Against an existing deployment: a missing pool fails at once; a handler that keeps no count skips the effects check."""

from __future__ import annotations

import asyncio
import random

import pytest

from broker import connect, declare_streams, jetstream
from chaos import ChaosError, Env, KillWorker, Observation, check
from chaos.history import ACKED, History, PublishRecord
from chaos.observe import drop_uncounted
from chaos.run import run
from config.schema import NatsConfig

pytestmark = pytest.mark.timeout(60)


async def test_missing_pool_is_an_error_at_once(nats_url: str) -> None:
    nc = await connect(nats_url, name="test")
    try:
        await declare_streams(jetstream(nc), NatsConfig())
    finally:
        await nc.close()
    env = Env(url=nats_url, pool="nobody", node_name="n")
    with pytest.raises(ChaosError, match="no pool 'nobody' at .*consumer"):
        await asyncio.wait_for(
            run(env, "kill-workers", [KillWorker(env, random.Random(1))], seed=1, duration=1, rate=10, fault_s=0.1, calm_s=0.1),
            30,
        )


async def test_kill_workers_command_reports_a_missing_pool_at_once(nats_url: str) -> None:
    from chaos import kill_workers

    nc = await connect(nats_url, name="test")
    try:
        await declare_streams(jetstream(nc), NatsConfig())
    finally:
        await nc.close()
    with pytest.raises(ChaosError, match="no pool 'nobody'"):
        await asyncio.wait_for(kill_workers(nats_url, "n", "nobody", tasks=10, kills=1), 30)


def test_handler_without_a_count_is_not_an_invalid_verdict() -> None:
    history = History([PublishRecord("t1", ACKED), PublishRecord("t2", ACKED)])
    seen = Observation(results=[("t1", {"ok": True, "worker": "p.0"}), ("t2", {"ok": True, "worker": "p.1"})],
                       effects={"p.0": 0, "p.1": 0})
    assert not check(history, seen).valid  # read as missing effects, the old verdict
    why = drop_uncounted(seen, "p")
    assert "ctx.state['count']" in why and "chaos.handlers:count" in why
    report = check(history, seen)
    assert report.valid and report.duplicates_processed is None
    counted = Observation(results=seen.results, effects={"p.0": 1, "p.1": 1})
    assert drop_uncounted(counted, "p") == "" and check(history, counted).valid


def test_scenarios_on_an_existing_node_count_only_their_own(tmp_path) -> None:
    from chaos import run_scenario
    from chaos.env import POOL
    from supervisor.harness import start_node

    pools = {"mine": POOL, "plain": {"handler": "workers.examples:echo", "size": 2}}
    with start_node(tmp_path / "node", pools=pools, node="shared", supervisor={"max_restarts": 100, "max_seconds": 10}) as node:
        for _ in range(2):  # the second run must not count the first one's tasks
            result, setup = run_scenario("kill-workers", url=node.url, pool="mine", node="shared", duration=2.0, rate=100.0, seed=1)
            assert setup == {"existing": node.url, "pool": "mine", "node": "shared"}
            assert result.windows and result.report.attempted == result.report.completed == 200
            assert result.report.valid and result.report.duplicates_processed == 0, result.lines()
        # A handler that keeps no count: valid, with the effects check skipped and the reason given.
        result, _ = run_scenario("client-link-faults", url=node.url, pool="plain", duration=2.0, rate=100.0, seed=2)
        assert result.report.valid and result.report.duplicates_processed is None, result.lines()
        assert any("ctx.state['count']" in note for note in result.notes)
        with pytest.raises(Exception, match="needs a cluster and node of its own"):
            run_scenario("kill-nats-leader", url=node.url, pool="mine")
