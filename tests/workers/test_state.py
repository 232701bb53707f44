"""Persistent agent state against a real nats-server: commits, rollback, the
applied window, recovery, and redeliveries that must not apply twice."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from broker import (
    collect_results,
    declare_pool_consumer,
    declare_streams,
    jetstream,
    publish_task,
    read_stream,
    result_body,
    subjects,
)
from config import NatsConfig, PoolConfig
from tests.supervisor.helpers import eventually
from workers import (
    AgentState,
    Handler,
    Middleware,
    Outcome,
    StateConflictError,
    StateStore,
    Task,
    TaskAbandoned,
    Worker,
    agent_key,
)


class Lease:
    def __init__(self, valid: bool = True) -> None:
        self.valid = valid

    def lease_valid(self) -> bool:
        return self.valid


class Outcomes(Middleware):
    """Collects outcomes by task id; ``wait(ids)`` returns once all are in."""

    def __init__(self) -> None:
        self.by_id: dict[str, list[str]] = {}
        self._changed = asyncio.Event()

    def after_task(self, task: Task, outcome: Outcome) -> None:
        self.by_id.setdefault(task.task_id, []).append(outcome.kind)
        self._changed.set()

    async def wait(self, ids: set[str], timeout: float = 10) -> dict[str, list[str]]:
        async def _wait() -> None:
            while not ids <= set(self.by_id):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), timeout)
        return self.by_id


def pool(**kw: Any) -> PoolConfig:
    return PoolConfig(**{"name": "t", "handler": "tests.handlers:tally", "backoff": (0.01,), "max_deliver": 2, **kw})


@pytest.fixture
async def js(nc):
    js = jetstream(nc)
    await declare_streams(js, NatsConfig())
    await declare_pool_consumer(js, pool())
    return js


@pytest.fixture
async def store(js) -> StateStore:
    return await StateStore.open(js)


@pytest.fixture(params=["tally", "tally_sync"])
def tally(request) -> str:
    """The counting handler: async (it runs holding the agent lock) and sync
    (its calls run back to back on the agent's thread)."""
    return f"tests.handlers:{request.param}"


async def start_worker(nc, handler: str, slot: str = "t.0", **kw: Any) -> tuple[Worker, Outcomes, asyncio.Event, asyncio.Task]:
    cfg = pool(handler=handler, **kw)
    outcomes = Outcomes()
    worker = Worker(cfg, slot, nc, Handler.load(cfg.handler), middleware=[outcomes], fetch_timeout=0.2)
    await worker.bind()
    stop = asyncio.Event()
    return worker, outcomes, stop, asyncio.create_task(worker.run(stop))


async def seed(store: StateStore, slot: str, *, state: dict, applied: list[str], outbox: dict | None = None) -> None:
    doc = {"v": 1, "state": state, "applied": applied, "outbox": outbox or {}}
    await store.write(agent_key("local", slot), orjson.dumps(doc), 0)


# -- AgentState on its own -----------------------------------------------------


async def test_records_are_committed_with_the_state(nc, store) -> None:
    agent = AgentState(store, "n.t.0", window=10, is_connected=lambda: nc.is_connected)
    assert await agent.open() == {}
    agent.state["x"] = 1
    await agent.record("a", 1, {"r": 1}, Lease())
    stored = await store.load("n.t.0")
    assert stored.state == {"x": 1} and stored.applied == ["a"]
    assert stored.outbox == {"a": {"seq": 1, "result": {"r": 1}}}
    agent.settle("a")
    await agent.close()
    assert (await store.load("n.t.0")).outbox == {}


async def test_rollback_discards_effects_since_the_last_record(nc, store) -> None:
    agent = AgentState(store, "n.t.0", window=10, is_connected=lambda: True)
    await agent.open()
    agent.state["x"] = 1
    await agent.record("a", 1, {}, Lease())
    agent.state["x"] = 99
    agent.state["junk"] = [1]
    agent.rollback()
    assert agent.state == {"x": 1}
    await agent.close()


async def test_a_lost_lease_abandons_uncommitted_records_and_fences_the_key(nc, store) -> None:
    agent = AgentState(store, "n.t.0", window=10, is_connected=lambda: True)
    await agent.open()
    agent.state["x"] = 1
    await agent.record("a", 1, {}, Lease())
    revision = (await store.load("n.t.0")).revision
    agent.state["x"] = 2
    with pytest.raises(TaskAbandoned, match="may have moved to another worker"):
        await agent.record("b", 2, {}, Lease(valid=False))
    assert agent.state == {"x": 1}
    assert agent.lookup("b") is None and agent.lookup("a") is not None
    stored = await store.load("n.t.0")
    assert stored.state == {"x": 1} and stored.applied == ["a"]
    assert stored.revision == revision + 1  # the fence: a delayed earlier write now fails
    await agent.close()


async def test_a_write_by_someone_else_stops_the_agent(nc, store) -> None:
    agent = AgentState(store, "n.t.0", window=10, is_connected=lambda: True)
    await agent.open()
    await agent.record("a", 1, {}, Lease())
    await store.kv.put("n.t.0", b'{"state": {"someone": "else"}}')
    with pytest.raises(StateConflictError, match="no longer at revision"):
        await agent.record("b", 2, {}, Lease())
    with pytest.raises(StateConflictError):
        agent.record("c", 3, {}, Lease())
    await agent.close()


async def test_the_window_keeps_unsettled_tasks_and_the_last_settled_ones(nc, store) -> None:
    agent = AgentState(store, "n.t.0", window=10, is_connected=lambda: True)
    await agent.open()
    for i in range(30):
        await agent.record(f"t{i}", i + 1, {}, Lease())
    for i in range(25):  # t25..t29 stay unsettled
        agent.settle(f"t{i}")
    await agent.close()
    stored = await store.load("n.t.0")
    assert stored.applied == [f"t{i}" for i in range(15, 30)]
    assert sorted(stored.outbox) == [f"t{i}" for i in range(25, 30)]


# -- the worker ------------------------------------------------------------------


async def test_state_survives_a_restart_of_the_slot(nc, js, store, tally) -> None:
    for n, expected in ((5, 5), (3, 8)):
        worker, outcomes, stop, runner = await start_worker(nc, tally, concurrency=8)
        ids = {f"run{expected}-{i}" for i in range(n)}
        await asyncio.gather(*(publish_task(js, "t", {}, task_id=t) for t in ids))
        assert await outcomes.wait(ids) == {t: ["ok"] for t in ids}
        stop.set()
        assert await runner == "stopped"
        assert (await store.load(agent_key("local", "t.0"))).state == {"count": expected}


async def test_a_failing_handler_leaves_no_effect(nc, js, store, tally) -> None:
    worker, outcomes, stop, runner = await start_worker(nc, tally)
    await publish_task(js, "t", {}, task_id="good-1")
    await publish_task(js, "t", {"fail": True}, task_id="bad-1")
    await publish_task(js, "t", {}, task_id="good-2")
    got = await outcomes.wait({"good-1", "bad-1", "good-2"})
    stop.set()
    await runner
    assert got["bad-1"] == ["retry", "exhausted"]
    assert (await store.load(agent_key("local", "t.0"))).state == {"count": 2}
    [dead] = await read_stream(js, subjects.DLQ_STREAM, "dlq.t")
    assert dead.headers[subjects.ERROR] == "RuntimeError: failing after counting bad-1"


async def test_a_task_the_agent_applied_is_not_applied_again(nc, js, store, tally) -> None:
    await seed(store, "t.0", state={"count": 7}, applied=["dup-1"])
    worker, outcomes, stop, runner = await start_worker(nc, tally)
    await publish_task(js, "t", {}, task_id="dup-1")
    await publish_task(js, "t", {}, task_id="new-1")
    got = await outcomes.wait({"dup-1", "new-1"})
    stop.set()
    await runner
    assert got == {"dup-1": ["duplicate"], "new-1": ["ok"]}
    assert (await store.load(agent_key("local", "t.0"))).state == {"count": 8}
    assert (await js.stream_info(subjects.TASKS_STREAM)).state.messages == 0


async def test_unsettled_tasks_of_the_previous_process_are_settled_at_start(nc, js, store, tally) -> None:
    ack = await publish_task(js, "t", {}, task_id="rec-1")
    body = result_body(task_id="rec-1", pool="t", worker="t.0", attempt=1, duration_ms=1.0, result={"from": "outbox"})
    await seed(store, "t.0", state={"count": 1}, applied=["rec-1"], outbox={"rec-1": {"seq": ack.seq, "result": body}})
    async with collect_results(js, "t") as results:
        worker, outcomes, stop, runner = await start_worker(nc, tally)
        got = await results.wait_for({"rec-1"}, timeout=10)
    stop.set()
    await runner
    assert got["rec-1"] == body
    assert outcomes.by_id == {}  # never handed to the handler
    assert (await js.stream_info(subjects.TASKS_STREAM)).state.messages == 0
    stored = await store.load(agent_key("local", "t.0"))
    assert stored.state == {"count": 1} and stored.outbox == {} and stored.applied == ["rec-1"]


async def test_a_task_another_agent_applied_is_not_applied_again(nc, js, store, tally) -> None:
    body = result_body(task_id="peer-1", pool="t", worker="t.1", attempt=1, duration_ms=1.0, result={"count": 4})
    await publish_task(js, "t", {}, task_id="peer-1")
    # Its first delivery went to t.1, which stored its state, then died.
    sub = await js.pull_subscribe_bind(durable=subjects.consumer("t"), stream=subjects.TASKS_STREAM)
    [first] = await sub.fetch(1, timeout=5)
    await seed(store, "t.1", state={"count": 4}, applied=["peer-1"],
               outbox={"peer-1": {"seq": first.metadata.sequence.stream, "result": body}})
    await first.nak()
    await sub.unsubscribe()
    async with collect_results(js, "t") as results:
        worker, outcomes, stop, runner = await start_worker(nc, tally)
        got = await results.wait_for({"peer-1"}, timeout=10)
        await outcomes.wait({"peer-1"})
    stop.set()
    await runner
    assert outcomes.by_id == {"peer-1": ["duplicate"]}
    assert got["peer-1"] == body  # t.1's result, re-published
    assert (await store.load(agent_key("local", "t.0"))).state == {}
    assert (await js.stream_info(subjects.TASKS_STREAM)).state.messages == 0


async def test_concurrent_tasks_apply_one_at_a_time(nc, js, store, tally) -> None:
    worker, outcomes, stop, runner = await start_worker(nc, tally, concurrency=8)
    ids = {f"c{i}" for i in range(40)}
    async with collect_results(js, "t") as results:
        await asyncio.gather(*(publish_task(js, "t", {"seconds": 0.002}, task_id=t) for t in ids))
        got = await results.wait_for(ids, timeout=20)
    stop.set()
    await runner
    # Each task saw the count its predecessors left: no update lost, none repeated.
    assert sorted(r["result"]["count"] for r in got.values()) == list(range(1, 41))
    assert (await store.load(agent_key("local", "t.0"))).state == {"count": 40}


async def test_failures_among_concurrent_tasks_roll_back_only_their_own_effects(nc, js, store, tally) -> None:
    worker, outcomes, stop, runner = await start_worker(nc, tally, concurrency=8, max_deliver=1, backoff=())
    failing = {f"f{i}" for i in range(0, 30, 3)}
    ids = {f"f{i}" for i in range(30)}
    async with collect_results(js, "t") as results:
        await asyncio.gather(*(publish_task(js, "t", {"fail": t in failing}, task_id=t) for t in sorted(ids)))
        got = await results.wait_for(ids - failing, timeout=20)
        await outcomes.wait(ids)
    stop.set()
    await runner
    assert {t: outcomes.by_id[t] for t in failing} == {t: ["exhausted"] for t in failing}
    # The successful tasks saw the counts 1..20 between them: no failed task's count stayed.
    assert sorted(got[t]["result"]["count"] for t in ids - failing) == list(range(1, 21))
    assert (await store.load(agent_key("local", "t.0"))).state == {"count": 20}


async def test_waiting_for_its_turn_does_not_count_against_the_time_limit(nc, js, store, tally) -> None:
    # Four tasks of 0.3 s each run one after the other; each gets its whole 0.5 s.
    worker, outcomes, stop, runner = await start_worker(nc, tally, concurrency=4, time_limit=0.5)
    ids = {f"w{i}" for i in range(4)}
    await asyncio.gather(*(publish_task(js, "t", {"seconds": 0.3}, task_id=t) for t in ids))
    got = await outcomes.wait(ids)
    stop.set()
    await runner
    assert got == {t: ["ok"] for t in ids}
    assert (await store.load(agent_key("local", "t.0"))).state == {"count": 4}


async def test_a_hard_time_limit_hands_back_the_tasks_waiting_for_their_turn(nc, js, store) -> None:
    handler = "tests.handlers:tally_sync"
    worker, outcomes, stop, runner = await start_worker(nc, handler, concurrency=4, hard_time_limit=0.3,
                                                        max_deliver=3)
    await publish_task(js, "t", {"seconds": 1.0, "first_only": True}, task_id="stuck")

    async def in_hand() -> bool:
        return (await js.consumer_info(subjects.TASKS_STREAM, subjects.consumer("t"))).num_ack_pending == 1

    await eventually(in_hand, timeout=10, what="the stuck task in the worker's hands")
    queued = {f"q{i}" for i in range(3)}
    await asyncio.gather(*(publish_task(js, "t", {}, task_id=t) for t in queued))
    assert await asyncio.wait_for(runner, 10) == "hard_time_limit"
    assert outcomes.by_id["stuck"] == ["retry"]
    assert all(kinds == ["abandoned"] for t, kinds in outcomes.by_id.items() if t in queued), outcomes.by_id
    # The next incarnation of the slot finishes everything.
    worker, outcomes, stop, runner = await start_worker(nc, handler, concurrency=4, max_deliver=3)
    got = await outcomes.wait(queued | {"stuck"}, timeout=15)
    stop.set()
    await runner
    assert got == {t: ["ok"] for t in queued | {"stuck"}}
    # The stuck call counted for nothing: each task applied exactly once.
    assert (await store.load(agent_key("local", "t.0"))).state == {"count": 4}
