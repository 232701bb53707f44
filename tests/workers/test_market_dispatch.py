"""Market dispatch end to end: real ``foundation up`` nodes, real worker processes, real NATS.

Every test watches the pool's Contract Net conversations on ``coord.cnp.p.>``
(cfps, proposals, progress and endings all travel there; only accepts and
rejects go to the agents' inboxes), so it can tell that tasks really went
through the market and which agent won what.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from broker import collect_results, jetstream, publish_task, read_stream, subjects
from protocols.market import messages
from protocols.registry import ACCEPTING, open_registry
from supervisor.harness import FOUNDATION, REPO, NodeProcess, write_config
from workers.contractor import MALFORMED, MalformedOfferError, Offer, spread, task_cost
from workers.handler import Handler

pytestmark = pytest.mark.timeout(120)

SLOTS = {"p.0", "p.1", "p.2"}


@dataclass
class Cfp:
    task_id: str
    round: int
    attempt: int
    initiator: str
    to: list[str]
    index: int  # position among every message seen


@dataclass
class Watch:
    """What the test saw of pool p's conversations."""

    seen: int = 0
    cfps: dict[str, Cfp] = field(default_factory=dict)  # conversation id -> cfp
    progress: dict[str, asyncio.Future[tuple[str, str]]] = field(default_factory=dict)  # task id -> (winner, cid)

    def on(self, msg: Any) -> None:
        parsed = messages.parse(msg)
        if parsed is None:
            return
        performative, cid, sender, _, body = parsed
        self.seen += 1
        if performative == messages.CFP:
            task = body.get("task") or {}
            self.cfps[cid] = Cfp(body["task_id"], body["round"], task.get("attempt", 0), sender, body["to"], self.seen)
        elif performative == messages.PROGRESS and cid in self.cfps:
            waiter = self.progress.get(self.cfps[cid].task_id)
            if waiter is not None and not waiter.done():
                waiter.set_result((sender, cid))

    def of(self, task_id: str) -> list[Cfp]:
        return [c for c in self.cfps.values() if c.task_id == task_id]


async def watch_market(nc) -> tuple[Watch, Any]:
    watch = Watch()

    async def cb(msg: Any) -> None:
        watch.on(msg)

    sub = await nc.subscribe("coord.cnp.p.>", cb=cb)
    await nc.flush()
    return watch, sub


def market_node(tmp_path: Path, nats_url: str, **pool: Any) -> NodeProcess:
    table = {"dispatch": "market", "size": 3, **pool}
    return NodeProcess(write_config(tmp_path / "f.toml", nats_url=nats_url, pools={"p": table})).wait_up()


async def all_listed(nc, n: int) -> None:
    """Return once the registry lists ``n`` accepting agents of pool p (the dispatchers see the same bucket)."""
    async with open_registry(nc) as reg:
        await reg.wait_for(lambda c: len([e for e in c.find(pool="p") if e.status in ACCEPTING]) == n, timeout=30)


# -- the pieces, in this process ------------------------------------------------


def test_offer_round_trip_and_malformed_offers() -> None:
    offer = Offer({"n": 1}, 3, {"Nats-Msg-Id": "t-1"})
    assert Offer.parse(json.loads(json.dumps(offer.body()))) == offer
    for bad in ({"n": 1}, {"v": 2, "payload": 1}, {"v": 1, "payload": 1, "attempt": 0}, "x", None):
        with pytest.raises(MalformedOfferError):
            Offer.parse(bad)
    assert MALFORMED == "malformed offer"


def test_prices_spread_ties_and_follow_the_handler_cost() -> None:
    def priced(payload: Any) -> int:
        return len(payload["items"])

    priced.cost = lambda payload: 2.0 * len(payload["items"])  # type: ignore[attr-defined]
    assert task_cost(Handler(priced), {"items": [1, 2, 3]}) == 6.0
    assert task_cost(Handler(lambda p: p), {}) == 1.0
    values = [spread(f"n.p.{i}", "task-1") for i in range(3)]
    assert all(0 <= v < 1 for v in values) and len(set(values)) == 3
    assert spread("n.p.0", "task-1") == values[0]  # stable: the same agent and task always hash alike
    winners = {min(range(3), key=lambda i: spread(f"n.p.{i}", f"task-{t}")) for t in range(50)}
    assert winners == {0, 1, 2}  # equally loaded agents split the tasks between them


# -- real nodes -------------------------------------------------------------------


async def test_market_pool_of_three_processes_every_task(tmp_path: Path, nats_url: str, nc) -> None:
    node = market_node(tmp_path, nats_url, handler="workers.examples:echo", concurrency=4)
    js = jetstream(nc)
    watch, sub = await watch_market(nc)
    try:
        await all_listed(nc, 3)
        ids = {f"m{i}" for i in range(300)}
        async with collect_results(js, "p") as results:
            await asyncio.gather(*(publish_task(js, "p", {"n": t}, task_id=t) for t in ids))
            got = await results.wait_for(ids, timeout=60)
        assert set(got) == ids  # lost = acked - processed = 0
        assert all(r["ok"] and r["result"] == {"n": t} and r["worker"] in SLOTS for t, r in got.items())
        # Each one went through a Contract Net round among the three agents.
        assert {c.task_id for c in watch.cfps.values()} >= ids
        assert all(sorted(c.to) == ["test.p.0", "test.p.1", "test.p.2"] for c in watch.cfps.values())
    finally:
        await sub.unsubscribe()
        assert node.stop() == 0
    info = await js.consumer_info(subjects.TASKS_STREAM, subjects.consumer("p"))
    assert info.num_ack_pending == 0 and info.num_pending == 0


# With three agents the winner is usually not the process that fetched the task, so
# its dispatcher sees it fall silent and re-offers the task; alone, the agent is
# always its own dispatcher, so the task comes back from JetStream after ack_wait.
@pytest.mark.parametrize("size", [3, 1], ids=["pool-of-3", "pool-of-1"])
async def test_kill_9_of_the_winning_agent_reoffers_the_task_and_loses_nothing(
    tmp_path: Path, nats_url: str, nc, size: int
) -> None:
    # ack_wait 2: the winner's silence timeout, and the redelivery delay if the dispatcher dies.
    node = market_node(tmp_path, nats_url, handler="tests.handlers:slow", size=size, concurrency=4, ack_wait=2)
    js = jetstream(nc)
    watch, sub = await watch_market(nc)
    try:
        await all_listed(nc, size)
        ids = {f"q{i}" for i in range(40)} | {"slow-1"}
        watch.progress["slow-1"] = asyncio.get_running_loop().create_future()
        async with collect_results(js, "p") as results, open_registry(nc) as reg:
            await publish_task(js, "p", {"seconds": 2.0}, task_id="slow-1")
            await asyncio.gather(*(publish_task(js, "p", {"seconds": 0.01}, task_id=t) for t in ids - {"slow-1"}))
            winner, cid = await asyncio.wait_for(watch.progress["slow-1"], 15)  # the winner is at work
            entry = reg.lookup(winner)
            assert entry is not None and entry.metadata["slot"] in SLOTS
            killed_at = watch.seen
            os.kill(entry.pid, signal.SIGKILL)
            got = await results.wait_for(ids, timeout=60)
        assert set(got) == ids  # lost = 0
        assert all(r["ok"] for r in got.values()), [r for r in got.values() if not r["ok"]]
        assert got["slow-1"]["result"] == {"seconds": 2.0}
        first = watch.cfps[cid]
        again = [c for c in watch.of("slow-1") if c.index > killed_at]
        # Re-offered: in a new round that leaves the silent winner out (its dispatcher lived),
        # or in a new delivery (the winner was its own dispatcher, so the task came back after ack_wait).
        assert again, f"slow-1 was not offered again after {winner} was killed"
        if first.initiator != winner:
            assert any(c.round > first.round and winner not in c.to for c in again)
        else:
            assert any(c.attempt > first.attempt for c in again)
    finally:
        await sub.unsubscribe()
        assert node.stop() == 0


async def test_sigterm_mid_run_leaves_no_unacknowledged_task(tmp_path: Path, nats_url: str, nc) -> None:
    node = market_node(tmp_path, nats_url, handler="tests.handlers:slow", concurrency=4)
    js = jetstream(nc)
    ids = {f"t{i}" for i in range(60)}
    await all_listed(nc, 3)
    async with collect_results(js, "p") as results:
        await asyncio.gather(*(publish_task(js, "p", {"seconds": 0.2}, task_id=t) for t in ids))
        await results.wait_for(1, timeout=30)
        # Draining agents refuse other dispatchers' cfps but finish their own dispatchers' tasks in hand.
        assert node.stop() == 0
    info = await js.consumer_info(subjects.TASKS_STREAM, subjects.consumer("p"))
    assert info.num_ack_pending == 0
    stored = {m.headers[subjects.MSG_ID] for m in await read_stream(js, subjects.RESULTS_STREAM)}
    assert stored <= ids and len(stored) + info.num_pending == len(ids)
    assert not (await read_stream(js, subjects.DLQ_STREAM))


async def test_always_failing_task_ends_in_the_dlq_with_the_reasons(tmp_path: Path, nats_url: str, nc) -> None:
    node = market_node(tmp_path, nats_url, handler="workers.examples:fail", max_deliver=2, backoff=[0.1])
    js = jetstream(nc)
    watch, sub = await watch_market(nc)
    try:
        await all_listed(nc, 3)
        async with collect_results(js, "p") as results:
            await publish_task(js, "p", {"x": 1}, task_id="bad-1")
            await publish_task(js, "p", None, task_id="raw-1", raw=b"{not json")
            got = await results.wait_for({"bad-1", "raw-1"}, timeout=30)
        dead = {m.headers[subjects.TASK_ID]: m for m in await read_stream(js, subjects.DLQ_STREAM)}
    finally:
        await sub.unsubscribe()
        assert node.stop() == 0
    assert set(dead) == {"bad-1", "raw-1"}
    bad = dead["bad-1"]
    assert bad.data == b'{"x":1}' and bad.headers[subjects.POOL] == "p" and bad.headers[subjects.ATTEMPTS] == "2"
    error = bad.headers[subjects.ERROR]
    assert error.startswith("AwardFailedError: task bad-1: the winner of each of 3 round(s) failed")
    assert error.count("failed: ValueError: cannot process {'x': 1}") == 3
    assert got["bad-1"] == {**got["bad-1"], "ok": False, "error": error, "attempt": 2}
    # Each of the two deliveries offered it to every agent in turn, the failed ones left out.
    assert [(c.attempt, c.round, len(c.to)) for c in sorted(watch.of("bad-1"), key=lambda c: c.index)] == [
        (1, 1, 3), (1, 2, 2), (1, 3, 1), (2, 1, 3), (2, 2, 2), (2, 3, 1),
    ]
    # Not JSON: to the DLQ at once, never offered.
    raw = dead["raw-1"]
    assert raw.data == b"{not json" and raw.headers[subjects.ATTEMPTS] == "1"
    assert raw.headers[subjects.ERROR].startswith("InvalidJSONError: ")
    assert got["raw-1"]["ok"] is False and not watch.of("raw-1")


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        FOUNDATION, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_auction_against_a_live_node_prints_the_bids_and_the_winner(
    tmp_path: Path, nats_url: str, nc
) -> None:
    node = market_node(tmp_path, nats_url, handler="workers.examples:echo", size=2)
    cfg = str(tmp_path / "f.toml")
    try:
        await all_listed(nc, 2)
        client = ("--config", cfg, "--url", nats_url)
        code, out, err = await run_cli("market", "auction", "--pool", "p", "--task", '{"n": 7}', "--kind", "vickrey",
                                       "--json", *client)
        assert code == 0, err
        report = json.loads(out)
        asks = {a["agent"]: a["price"] for a in report["answers"] if a["answer"] == "propose"}
        assert set(asks) == {"test.p.0", "test.p.1"} == set(report["agents"])
        assert report["winner"] == min(asks, key=asks.__getitem__) and report["ask"] == asks[report["winner"]]
        assert report["payment"] == pytest.approx(max(asks.values()))  # Vickrey: the second-lowest of two asks
        assert report["result"] == {"n": 7} and report["worker"] == report["winner"].removeprefix("test.")

        code, out, err = await run_cli("market", "auction", "--pool", "p", "--task", "[1, 2]", *client)
        assert code == 0, err
        assert "test.p.0" in out and "test.p.1" in out and "winner: test.p." in out and "result: [1,2]" in out

        # Asks are about 1.0: with a ceiling below them nobody can win; the answers are still shown.
        code, out, err = await run_cli("market", "auction", "--pool", "p", "--task", "{}", "--max-price", "0.5",
                                       *client)
        assert code == 1 and "no agent of pool 'p' proposed at or under 0.5" in err and "propose" in out

        code, out, err = await run_cli("market", "auction", "--pool", "nope", "--task", "{}", *client)
        assert code == 1 and "no live agent of pool 'nope' in the registry" in err
        code, out, err = await run_cli("market", "auction", "--pool", "p", "--task", "{oops", *client)
        assert code == 1 and "--task is not valid JSON" in err
    finally:
        assert node.stop() == 0
