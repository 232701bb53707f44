"""Each link of the middleware chain, through a whole worker on the stub broker
(tests/stubbroker.py): fast, no server. The delivery guarantee itself is
tested against a real nats-server in the other files of this folder."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import Any

import pytest
from prometheus_client import REGISTRY

from config import PoolConfig
from tests.stubbroker import Record, StubJournal, StubMsg, StubOutcomes, StubQueue, StubStateStore
from workers import AgentState, Handler, Middleware, Outcome, StateTransaction, Worker, agent_key
from workers.metrics import MetricsMiddleware

pytestmark = pytest.mark.timeout(30)


class Kinds(Middleware):
    """Observes the settled outcome of every delivery."""

    def __init__(self) -> None:
        self.kinds: dict[str, list[str]] = {}

    def after_task(self, task: Any, outcome: Outcome) -> None:
        self.kinds.setdefault(task.task_id, []).append(outcome.kind)


def pool(**kw: Any) -> PoolConfig:
    return PoolConfig(name="t", handler="x:y", **{"max_deliver": 3, "backoff": (0.01, 0.02), **kw})


async def run(cfg: PoolConfig, fn: Any, msgs: list[StubMsg], until: Any, *, middleware: list[Any] | None = None,
              gate: Any = None, store: StubStateStore | None = None,
              reconnected: bool = False) -> tuple[Record, Worker, StubOutcomes]:
    """Run a worker on the stub broker until ``until(record)``, then stop it."""
    record = Record()
    queue = StubQueue(record, msgs)
    handler = Handler(fn)
    worker = Worker(cfg, "t.0", None, handler, middleware=middleware, gate=gate, fetch_timeout=0.05)
    worker.outcomes = outcomes = StubOutcomes(record)
    transaction = None
    if store is not None:
        agent = AgentState(store, agent_key("local", "t.0"), window=10, is_connected=lambda: True)
        await agent.open()
        transaction = StateTransaction(agent, store, queue, cfg,  # type: ignore[arg-type]
                                       serial=not handler.is_async, worker_id="t.0")
    if reconnected:
        queue.reconnected()  # since the worker started
    worker.assemble(queue, StubJournal(record), transaction)  # type: ignore[arg-type]
    stop = asyncio.Event()
    runner = asyncio.create_task(worker.run(stop))
    await record.wait(lambda: until(record))
    stop.set()
    await asyncio.wait_for(runner, 10)
    return record, worker, outcomes


async def echo(payload: Any) -> Any:
    return payload


async def fail(payload: Any) -> Any:
    raise ValueError(f"cannot process {payload}")


def settled(*ids: str) -> Any:
    return lambda r: all(any(w in ("ack", "ack_confirmed", "nak") for w in r.of(i)) for i in ids)


async def test_the_result_is_stored_before_the_ack() -> None:
    record, worker, outcomes = await run(pool(), echo, [StubMsg({"n": 1}, "t1", seq=1)], settled("t1"))
    assert record.of("t1") == ["result", "ack"]
    assert outcomes.results["t1"]["ok"] is True and outcomes.results["t1"]["result"] == {"n": 1}
    assert worker.processed == 1


async def test_a_sync_handler_runs_in_its_thread() -> None:
    def sync_echo(payload: Any) -> Any:
        return payload

    msgs = [StubMsg(i, f"s{i}", seq=i) for i in range(1, 21)]
    record, worker, outcomes = await run(pool(concurrency=8), sync_echo, msgs, settled(*(m.task_id for m in msgs)))
    assert {t: b["result"] for t, b in outcomes.results.items()} == {f"s{i}": i for i in range(1, 21)}


async def test_a_bad_body_is_dead_lettered_at_once() -> None:
    kinds = Kinds()
    record, _, outcomes = await run(pool(), echo, [StubMsg(None, "bad", seq=1, raw=b"{no")], settled("bad"),
                                    middleware=[kinds])
    assert record.of("bad") == ["dead_letter", "result", "ack"]
    assert outcomes.results["bad"]["ok"] is False and outcomes.results["bad"]["error"].startswith("InvalidJSONError")
    assert kinds.kinds == {"bad": ["invalid"]}


async def test_a_failure_is_retried_with_backoff_then_dead_lettered() -> None:
    kinds = Kinds()
    record, _, outcomes = await run(pool(), fail, [StubMsg({"x": 1}, "f", seq=1)], settled("f"), middleware=[kinds])
    assert record.of("f") == ["journal_error", "nak"]
    assert [d for w, _, d in record.events if w == "nak"] == [0.01]  # backoff before attempt 2
    # The last attempt: the DLQ with the handler's error, an ok: false result, the ack.
    record, _, outcomes = await run(pool(), fail, [StubMsg({"x": 1}, "f", seq=1, attempt=3)], settled("f"),
                                    middleware=[kinds])
    assert record.of("f")[-3:] == ["dead_letter", "result", "ack"]
    assert outcomes.letters["f"][1:] == ("ValueError: cannot process {'x': 1}", 3)
    assert kinds.kinds == {"f": ["retry", "exhausted"]}


async def test_a_raising_middleware_does_not_lose_its_task(caplog: pytest.LogCaptureFixture) -> None:
    @asynccontextmanager
    async def broken_gate() -> Any:
        raise RuntimeError("the quota service is confused")
        yield

    class Broken(Middleware):
        async def __call__(self, delivery: Any, call_next: Any) -> Outcome:
            raise RuntimeError("an observer that breaks before the task")

    class BrokenAfter(Middleware):
        async def __call__(self, delivery: Any, call_next: Any) -> Outcome:
            await call_next(delivery)
            raise RuntimeError("an observer that breaks after the task")

    caplog.set_level(logging.ERROR, "foundation.worker")
    # A link inside the chain (the quota gate): a failed attempt, retried, then dead-lettered.
    record, _, _ = await run(pool(), echo, [StubMsg(1, "g", seq=1)], settled("g"), gate=broken_gate)
    assert record.of("g") == ["journal_error", "nak"]
    record, _, outcomes = await run(pool(), echo, [StubMsg(1, "g", seq=1, attempt=3)], settled("g"), gate=broken_gate)
    assert record.of("g")[-3:] == ["dead_letter", "result", "ack"]
    assert outcomes.results["g"]["error"] == "RuntimeError: the quota service is confused"
    # A middleware given to the worker, before the task settled: naked for a retry.
    record, _, _ = await run(pool(), echo, [StubMsg(1, "o", seq=1)], settled("o"), middleware=[Broken()])
    assert record.of("o") == ["nak"]
    # After: the task was settled already, once.
    record, _, _ = await run(pool(), echo, [StubMsg(1, "a", seq=1)], settled("a"), middleware=[BrokenAfter()])
    assert record.of("a") == ["result", "ack"]
    logged = [r.getMessage() for r in caplog.records]
    assert sum("middleware" in m and "failed" in m for m in logged) == 4


async def test_a_suspect_waits_its_backoff_and_runs_alone() -> None:
    record = Record()

    async def slow(payload: Any) -> Any:
        record.add("start", payload)
        await asyncio.sleep(0.05)
        record.add("end", payload)
        return payload

    msgs = [StubMsg("a", "a", seq=1), StubMsg("s", "s", seq=2, attempt=2), StubMsg("b", "b", seq=3)]
    # No journal entry for "s": its last attempt is unaccounted for, so it is a suspect.
    got, _, _ = await run(pool(concurrency=4, backoff=(0.01,)), slow, msgs, settled("a", "s", "b"))
    assert got.of("s") == ["journaled", "running", "result", "ack"]
    # Journaled as running only once "a" and "b" were done: nothing ran beside it.
    seen = [who for what, who, _ in got.events if what in ("ack", "running")]
    assert set(seen[:2]) == {"a", "b"} and seen[2:] == ["s", "s"], seen


async def test_the_soft_time_limit_interrupts_the_handler() -> None:
    async def nap(payload: Any) -> Any:
        await asyncio.sleep(10)

    _, _, outcomes = await run(pool(time_limit=0.05, max_deliver=1, backoff=()), nap, [StubMsg(1, "n", seq=1)], settled("n"))
    assert outcomes.results["n"]["error"] == "SoftTimeLimitExceeded: the handler ran over its soft time limit of 0.05s"


async def test_the_hard_time_limit_recycles_the_worker() -> None:
    def stuck(payload: Any) -> Any:
        time.sleep(0.3)  # one C call: out of the soft limit's reach

    record, worker, _ = await run(pool(hard_time_limit=0.05), stuck, [StubMsg(1, "h", seq=1)], settled("h"))
    assert record.of("h") == ["journal_error", "nak"]
    assert worker.recycle.reason == "hard_time_limit"


def tally(payload: Any, ctx: Any) -> Any:
    ctx.state["count"] = ctx.state.get("count", 0) + 1
    if payload.get("fail"):
        raise RuntimeError("fails after counting")
    return ctx.state["count"]


async def atally(payload: Any, ctx: Any) -> Any:
    return tally(payload, ctx)


@pytest.mark.parametrize("handler", [atally, tally], ids=["async", "sync"])
async def test_the_state_transaction_applies_a_task_once(handler: Any) -> None:
    store = StubStateStore()
    store.seed(agent_key("local", "t.0"), {"count": 5}, ["dup"])
    msgs = [StubMsg({}, "dup", seq=1), StubMsg({}, "new", seq=2), StubMsg({"fail": True}, "bad", seq=3)]
    kinds = Kinds()
    record, _, outcomes = await run(pool(max_deliver=1, backoff=()), handler, msgs, settled("dup", "new", "bad"),
                                    middleware=[kinds], store=store)
    assert kinds.kinds == {"dup": ["duplicate"], "new": ["ok"], "bad": ["exhausted"]}
    assert record.of("dup") == ["ack_confirmed"]  # applied already: not run again
    assert record.of("new") == ["result", "ack_confirmed"]  # its state was committed before
    assert outcomes.results["new"]["result"] == 6
    stored = await store.load(agent_key("local", "t.0"))
    assert stored.state == {"count": 6}  # "bad" was rolled back
    assert "new" in stored.applied and "bad" not in stored.applied


@pytest.mark.parametrize("reconnected", [True, False], ids=["after a reconnect", "no reconnect"])
async def test_after_a_reconnect_a_first_delivery_is_looked_up_in_the_other_agents(reconnected: bool) -> None:
    # A restarted server may deliver a task again as a first delivery (it lost
    # the delivery count): once the connection came back, the tasks queued by
    # then are looked up in what the pool's other agents applied.
    store = StubStateStore()
    store.seed(agent_key("local", "t.1"), {"count": 1}, ["again"])
    msgs = [StubMsg({}, "again", seq=1), StubMsg({}, "fresh", seq=2)]
    kinds = Kinds()
    await run(pool(), atally, msgs, settled("again", "fresh"), middleware=[kinds], store=store,
              reconnected=reconnected)
    assert kinds.kinds == {"again": ["duplicate" if reconnected else "ok"], "fresh": ["ok"]}


async def test_metrics_count_settled_outcomes() -> None:
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"pool": "tm", **labels}) or 0.0

    before = (value("foundation_tasks_processed_total"), value("foundation_tasks_retried_total"),
              value("foundation_task_duration_seconds_count"))
    msgs = [StubMsg(1, "m1", seq=1), StubMsg(2, "m2", seq=2)]

    async def odd_fails(payload: Any) -> Any:
        if payload == 2:
            raise ValueError("even")
        return payload

    await run(PoolConfig(name="tm", handler="x:y", backoff=(0.01,)), odd_fails, msgs, settled("m1", "m2"),
              middleware=[MetricsMiddleware()])
    after = (value("foundation_tasks_processed_total"), value("foundation_tasks_retried_total"),
             value("foundation_task_duration_seconds_count"))
    assert [a - b for a, b in zip(after, before)] == [1, 1, 2]
    assert value("foundation_tasks_in_flight") == 0


async def test_the_quota_gate_is_entered_around_the_handler() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def gate() -> Any:
        events.append("enter")
        yield
        events.append("exit")

    async def noting(payload: Any) -> Any:
        events.append("handler")
        return payload

    record, _, _ = await run(pool(), noting, [StubMsg(1, "q", seq=1)], settled("q"), gate=gate)
    assert events == ["enter", "handler", "exit"]
    assert record.of("q") == ["result", "ack"]
