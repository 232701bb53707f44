"""Contract Net on a real nats-server: awards, refusals, late proposals, failures and crashes.

Every test checks the protocol invariants on the initiator's recorded
conversations (protocols.market.invariants) besides its own expectations.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from broker import connect
from protocols.market import (
    AwardFailedError,
    BetaReputation,
    CallForProposals,
    ContractNetInitiator,
    ContractNetParticipant,
    NoParticipantsError,
    NoProposalsError,
    reputation_weighted,
    run_violations,
)
from protocols.market import messages as m

REPO = Path(__file__).resolve().parents[3]
GROUP = "work"


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` until true; for participant-side records, which have no event to wait on."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def price(value: float) -> Callable[[CallForProposals], float]:
    return lambda cfp: value


async def echo(cfp: CallForProposals) -> Any:
    return {"echo": cfp.task}


@asynccontextmanager
async def agents(
    nc: Any, specs: dict[str, tuple[Callable, Callable]]
) -> AsyncIterator[dict[str, ContractNetParticipant]]:
    async with AsyncExitStack() as stack:
        started = {}
        for name, (bid, perform) in specs.items():
            participant = ContractNetParticipant(nc, GROUP, name, bid=bid, perform=perform)
            started[name] = await stack.enter_async_context(participant)
        yield started


def answers_received(participant: ContractNetParticipant, cid: str) -> list[str]:
    return [r.performative for r in participant.conversation(cid) if r.performative in (m.ACCEPT, m.REJECT)]


async def test_the_lowest_price_wins_and_its_result_comes_back(nc: Any) -> None:
    specs = {"a": (price(5), echo), "b": (price(3), echo), "c": (price(7), echo)}
    async with agents(nc, specs) as started:
        initiator = ContractNetInitiator(nc, GROUP, participants=list(specs), reply_within=5.0)
        result = await initiator.run({"n": 1}, task_id="t1")
        assert (result.winner, result.price, result.performative) == ("b", 3, m.INFORM_RESULT)
        assert result.result == {"echo": {"n": 1}}
        (conv,) = result.conversations
        assert run_violations(result.conversations) == []
        assert conv.outcome == m.RESULT and conv.task_id == "t1"
        # Everyone answered, so bidding closed long before the 5 s deadline.
        assert conv.sent(m.ACCEPT)[0].at < conv.deadline
        assert sorted((r.peer, r.body["reason"]) for r in conv.sent(m.REJECT)) == [("a", "outbid"), ("c", "outbid")]
        cid = conv.conversation_id
        await eventually(lambda: all(answers_received(p, cid) for p in started.values()))
        assert {n: answers_received(p, cid) for n, p in started.items()} == {
            "a": [m.REJECT],
            "b": [m.ACCEPT],
            "c": [m.REJECT],
        }


async def test_refusers_get_no_answer_and_only_proposers_are_considered(nc: Any) -> None:
    async def done(cfp: CallForProposals) -> None:
        return None

    specs = {"r1": (price_none := (lambda cfp: None), echo), "p": (price(4), done), "r2": (price_none, echo)}
    async with agents(nc, specs):
        initiator = ContractNetInitiator(nc, GROUP, participants=list(specs), reply_within=5.0)
        result = await initiator.run("job")
        (conv,) = result.conversations
        assert (result.winner, result.performative, result.result) == ("p", m.INFORM_DONE, None)
        assert sorted(r.peer for r in conv.received(m.REFUSE)) == ["r1", "r2"]
        assert [r.peer for r in conv.sent(m.ACCEPT) + conv.sent(m.REJECT)] == ["p"]
        assert run_violations(result.conversations) == []


async def test_when_everyone_refuses_the_run_fails_with_no_proposals(nc: Any) -> None:
    def broken(cfp: CallForProposals) -> float:
        raise RuntimeError("no capacity")

    specs = {"r": (lambda cfp: None, echo), "x": (broken, echo)}
    async with agents(nc, specs):
        initiator = ContractNetInitiator(nc, GROUP, participants=list(specs), reply_within=5.0)
        with pytest.raises(NoProposalsError) as info:
            await initiator.run("job")
        (conv,) = info.value.conversations
        assert conv.outcome == m.NO_PROPOSALS
        assert {r.peer: r.body["reason"] for r in conv.received(m.REFUSE)} == {
            "r": "declined",
            "x": "RuntimeError: no capacity",
        }
        assert run_violations(info.value.conversations) == []


async def test_a_string_bid_is_a_refusal_with_that_reason_and_open_proposals_are_pending(nc: Any) -> None:
    specs = {"busy": (lambda cfp: "full", echo), "p": (price(2), echo)}
    async with agents(nc, specs) as started:
        # "ghost" never answers, so bidding stays open until the deadline: p's proposal waits meanwhile.
        initiator = ContractNetInitiator(nc, GROUP, participants=[*specs, "ghost"], reply_within=1.0)
        run = asyncio.create_task(initiator.run("job"))
        await eventually(lambda: started["p"].pending == 1)
        assert started["busy"].pending == 0
        result = await run
        assert result.winner == "p" and started["p"].pending == 0
        (conv,) = result.conversations
        assert {r.peer: r.body["reason"] for r in conv.received(m.REFUSE)} == {"busy": "full"}
        assert run_violations(result.conversations) == []


async def test_a_late_proposal_is_rejected_and_never_accepted(nc: Any) -> None:
    late_seen = asyncio.Event()

    async def on_wire(msg: Any) -> None:
        if msg.headers.get(m.H_PERFORMATIVE) == m.PROPOSE and msg.headers.get(m.H_SENDER) == "slow":
            late_seen.set()

    async def slow_bid(cfp: CallForProposals) -> float:
        await asyncio.sleep(cfp.reply_within * 2)  # simulates slow pricing work
        return 1.0  # the cheapest offer, but too late

    async def waits_for_the_late_proposal(cfp: CallForProposals) -> str:
        # Keep the conversation open until the late proposal is on the wire, so the
        # initiator must deal with it (it reaches the initiator before this result).
        await asyncio.wait_for(late_seen.wait(), 10)
        return "ok"

    await nc.subscribe(f"coord.cnp.{GROUP}.*.reply.>", cb=on_wire)
    specs = {"slow": (slow_bid, echo), "fast": (price(9), waits_for_the_late_proposal)}
    async with agents(nc, specs) as started:
        initiator = ContractNetInitiator(nc, GROUP, participants=list(specs), reply_within=0.3)
        result = await initiator.run("job")
        (conv,) = result.conversations
        assert result.winner == "fast"
        (late,) = [r for r in conv.received(m.PROPOSE) if r.peer == "slow"]
        assert late.note == "late" and late.at >= conv.deadline
        assert [(r.peer, r.body["reason"]) for r in conv.sent(m.REJECT)] == [("slow", "late")]
        assert run_violations(result.conversations) == []
        await eventually(lambda: answers_received(started["slow"], conv.conversation_id) == [m.REJECT])


async def test_a_failing_winner_is_excluded_and_the_task_re_offered(nc: Any) -> None:
    def crash(cfp: CallForProposals) -> None:
        raise ValueError("disk full")

    specs = {"cheap": (price(1), crash), "solid": (price(2), echo)}
    outcomes: list[tuple[str, bool]] = []
    async with agents(nc, specs):
        initiator = ContractNetInitiator(
            nc, GROUP, participants=list(specs), reply_within=5.0, on_outcome=lambda a, ok: outcomes.append((a, ok))
        )
        result = await initiator.run("job")
        first, second = result.conversations
        assert (first.winner, first.outcome) == ("cheap", m.FAILED)
        assert first.received(m.FAILURE)[0].body["reason"] == "ValueError: disk full"
        assert second.addressed == ("solid",) and result.winner == "solid"
        assert outcomes == [("cheap", False), ("solid", True)]
        assert run_violations(result.conversations) == []


async def test_when_every_winner_fails_the_run_ends_after_max_rounds(nc: Any) -> None:
    def crash(cfp: CallForProposals) -> None:
        raise RuntimeError("boom")

    specs = {f"f{i}": (price(i), crash) for i in range(4)}
    async with agents(nc, specs):
        initiator = ContractNetInitiator(nc, GROUP, participants=list(specs), reply_within=5.0, max_rounds=3)
        with pytest.raises(AwardFailedError) as info:
            await initiator.run("job")
        assert [c.winner for c in info.value.conversations] == ["f0", "f1", "f2"]
        assert run_violations(info.value.conversations) == []


async def test_a_winner_whose_process_is_killed_times_out_and_the_task_is_re_offered(nc: Any, nats_url: str) -> None:
    ready, started = asyncio.Event(), asyncio.Event()
    await nc.subscribe("test.market.doomed.ready", cb=setter(ready))
    await nc.subscribe("test.market.doomed.started", cb=setter(started))
    await nc.flush()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.protocols.market.crashing_participant", nats_url, GROUP, "doomed", "1",
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        await asyncio.wait_for(ready.wait(), 30)
        async with agents(nc, {"backup": (price(5), echo)}):
            initiator = ContractNetInitiator(
                nc, GROUP, participants=["doomed", "backup"], reply_within=5.0, silence_timeout=0.6
            )
            run = asyncio.create_task(initiator.run("job", task_id="t-kill"))
            await asyncio.wait_for(started.wait(), 10)
            proc.send_signal(signal.SIGKILL)
            assert await proc.wait() == -signal.SIGKILL
            result = await asyncio.wait_for(run, 10)
        first, second = result.conversations
        assert (first.winner, first.outcome) == ("doomed", m.TIMEOUT)
        assert first.sent(m.CANCEL)[0].note == "timeout"
        assert (second.addressed, result.winner, result.result) == (("backup",), "backup", {"echo": "job"})
        assert run_violations(result.conversations) == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_winner_that_closes_its_connection_times_out(nc: Any, nats_url: str) -> None:
    own = await connect(nats_url, name="quitter")

    async def quit_midway(cfp: CallForProposals) -> None:
        await own.close()  # gone without an ending
        await asyncio.Event().wait()

    quitter = ContractNetParticipant(own, GROUP, "quitter", bid=price(1), perform=quit_midway)
    await quitter.start()
    try:
        async with agents(nc, {"steady": (price(3), echo)}):
            initiator = ContractNetInitiator(nc, GROUP, participants=["quitter", "steady"], silence_timeout=0.5)
            result = await initiator.run("job")
        assert [c.outcome for c in result.conversations] == [m.TIMEOUT, m.RESULT]
        assert result.winner == "steady"
        assert run_violations(result.conversations) == []
    finally:
        await quitter.stop()
        await own.close()


async def test_a_stopped_participant_reports_failure_so_the_task_is_re_offered_at_once(nc: Any) -> None:
    working = asyncio.Event()

    async def forever(cfp: CallForProposals) -> None:
        working.set()
        await asyncio.Event().wait()

    leaving = ContractNetParticipant(nc, GROUP, "leaving", bid=price(1), perform=forever)
    await leaving.start()
    async with agents(nc, {"staying": (price(2), echo)}):
        # A long silence timeout: only the failure report can explain a quick re-offer.
        initiator = ContractNetInitiator(nc, GROUP, participants=["leaving", "staying"], silence_timeout=60)
        run = asyncio.create_task(initiator.run("job"))
        await asyncio.wait_for(working.wait(), 10)
        await leaving.stop()
        result = await asyncio.wait_for(run, 10)
    first, second = result.conversations
    assert (first.winner, first.outcome) == ("leaving", m.FAILED)
    assert first.received(m.FAILURE)[0].body == {"reason": "participant stopped"}
    assert result.winner == "staying"
    assert run_violations(result.conversations) == []


async def test_draining_lets_awarded_work_finish_but_takes_no_new_cfps(nc: Any) -> None:
    working, release = asyncio.Event(), asyncio.Event()

    async def finishes_when_released(cfp: CallForProposals) -> str:
        working.set()
        await asyncio.wait_for(release.wait(), 10)
        return "finished"

    drainer = ContractNetParticipant(nc, GROUP, "drainer", bid=price(1), perform=finishes_when_released)
    await drainer.start()
    initiator = ContractNetInitiator(nc, GROUP, participants=["drainer"], reply_within=0.3)
    run = asyncio.create_task(initiator.run("job"))
    await asyncio.wait_for(working.wait(), 10)
    await drainer.stop_bidding()
    with pytest.raises(NoProposalsError):
        await initiator.run("another job")
    stopping = asyncio.create_task(drainer.stop(drain=10))
    release.set()
    result = await asyncio.wait_for(run, 10)
    await stopping
    assert (result.winner, result.result) == ("drainer", "finished")


async def test_an_award_after_stop_bidding_is_declined_at_once(nc: Any) -> None:
    proposed, gate = asyncio.Event(), asyncio.Event()

    async def on_wire(msg: Any) -> None:
        if msg.headers.get(m.H_PERFORMATIVE) == m.PROPOSE and msg.headers.get(m.H_SENDER) == "drainer":
            proposed.set()

    async def refuse_when_opened(cfp: CallForProposals) -> None:
        await asyncio.wait_for(gate.wait(), 10)  # holds bidding open until the drainer stopped
        return None

    await nc.subscribe(f"coord.cnp.{GROUP}.*.reply.>", cb=on_wire)
    drainer = ContractNetParticipant(nc, GROUP, "drainer", bid=price(1), perform=echo)
    await drainer.start()
    specs = {"gated": (refuse_when_opened, echo), "backup": (price(4), echo)}
    async with agents(nc, specs):
        everyone = ["drainer", *specs]
        initiator = ContractNetInitiator(nc, GROUP, participants=everyone, reply_within=10, silence_timeout=60)
        run = asyncio.create_task(initiator.run("job"))
        await asyncio.wait_for(proposed.wait(), 10)
        await drainer.stop_bidding()
        gate.set()
        result = await asyncio.wait_for(run, 10)
    await drainer.stop()
    first, second = result.conversations
    assert (first.winner, first.outcome) == ("drainer", m.FAILED)
    assert first.received(m.FAILURE)[0].body == {"reason": "participant stopping"}
    assert (second.addressed, result.winner) == (("gated", "backup"), "backup")
    assert run_violations(result.conversations) == []


async def test_reputation_outweighs_a_small_discount(nc: Any) -> None:
    rep = BetaReputation(prior_positive=1, prior_negative=1)
    for t in range(8):
        rep.observe("flaky", t % 4 == 0, float(t))  # 2 successes in 8
        rep.observe("trusty", True, float(t))
    specs = {"flaky": (price(8), echo), "trusty": (price(10), echo)}
    async with agents(nc, specs):
        scorer = reputation_weighted(lambda agent: rep.score(agent, 8.0))
        initiator = ContractNetInitiator(nc, GROUP, participants=list(specs), scorer=scorer, reply_within=5.0)
        assert (await initiator.run("job")).winner == "trusty"
        cheapest = ContractNetInitiator(nc, GROUP, participants=list(specs), reply_within=5.0)
        assert (await cheapest.run("job")).winner == "flaky"


async def test_participants_come_from_a_finder_and_unaddressed_agents_stay_quiet(nc: Any) -> None:
    specs = {"in": (price(5), echo), "out": (price(1), echo)}

    async def finder() -> list[str]:
        return ["in"]

    async with agents(nc, specs) as started:
        result = await ContractNetInitiator(nc, GROUP, participants=finder, reply_within=5.0).run("job")
        (conv,) = result.conversations
        assert result.winner == "in" and conv.addressed == ("in",)
        assert [r.peer for r in conv.received(m.PROPOSE)] == ["in"]
        assert started["out"].conversation(conv.conversation_id) == []
        with pytest.raises(NoParticipantsError):
            await ContractNetInitiator(nc, GROUP, participants=lambda: []).run("job")


async def test_invalid_prices_are_rejected_as_invalid(nc: Any) -> None:
    specs = {"neg": (price(-1), echo), "text": (lambda cfp: {"price": "cheap"}, echo), "ok": (price(2), echo)}
    async with agents(nc, specs):
        result = await ContractNetInitiator(nc, GROUP, participants=list(specs), reply_within=5.0).run("job")
        (conv,) = result.conversations
        assert result.winner == "ok"
        rejected = sorted((r.peer, r.body["reason"]) for r in conv.sent(m.REJECT))
        assert rejected == [("neg", "invalid"), ("text", "invalid")]
        assert run_violations(result.conversations) == []


async def test_twenty_bidders_each_get_exactly_one_answer(nc: Any) -> None:
    specs = {f"b{i:02d}": (price(10 + (i * 7) % 20), echo) for i in range(20)}
    async with agents(nc, specs) as started:
        result = await ContractNetInitiator(nc, GROUP, participants=list(specs), reply_within=5.0).run("job")
        (conv,) = result.conversations
        assert result.winner == "b00" and result.price == 10
        assert run_violations(result.conversations) == []
        cid = conv.conversation_id
        await eventually(lambda: all(answers_received(p, cid) for p in started.values()))
        assert all(len(answers_received(p, cid)) == 1 for p in started.values())


def setter(event: asyncio.Event) -> Callable[[Any], Awaitable[None]]:
    """A NATS message callback that sets ``event``."""

    async def callback(msg: Any) -> None:
        event.set()

    return callback


async def test_a_bid_counts_for_the_agent_its_subject_names_not_the_header(nc: Any) -> None:
    async def mallory(msg: Any) -> None:
        performative, cid, _sender, reply_to, _body = m.parse(msg)
        # A bargain in honest's name, sent on mallory's own answer subject.
        await m.send(nc, m.answer_subject(reply_to, "mallory"), m.PROPOSE, conversation_id=cid, sender="honest",
                     reply_to=nc.new_inbox(), body={"price": 0.01})

    sub = await nc.subscribe(f"coord.cnp.{GROUP}.*.cfp", cb=mallory)
    async with agents(nc, {"honest": (price(5), echo)}):
        initiator = ContractNetInitiator(nc, GROUP, participants=["honest", "mallory"], reply_within=1.0)
        result = await initiator.run("job")
    await sub.unsubscribe()
    (conv,) = result.conversations
    assert (result.winner, result.price) == ("honest", 5)
    assert [r.note for r in conv.received(m.PROPOSE) if r.body == {"price": 0.01}] == ["forged"]
