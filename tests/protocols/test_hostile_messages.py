"""Messages any client can send on the coordination subjects: numbers clamped, state bounded.

Each test sends what the review found harmful (non-finite or huge deadlines,
floods of proposals or requests, equivocations, large values) and checks the
receiver stays correct and its memory bounded.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import pytest

from broker import codec, connect
from protocols.bft import Participant, Signer, StaticKeyDirectory, new_seed, proposer, subject
from protocols.bft.auth import REFUSED_MEMORY
from protocols.bft.messages import DECISION, MAX_VALUE_BYTES, PREVOTE, Message
from protocols.consensus import MAX_TIMEOUT, YES, Voter, parse_proposal, proposals_of
from protocols.market import messages as m
from protocols.market import participant as market_participant
from protocols.market.bids import Bid
from protocols.market.combinatorial import combinatorial_auction
from protocols.market.participant import MAX_REPLY_WINDOW, ContractNetParticipant
from protocols.variables import FloatVar, ParameterSpace
from protocols.variables.byzantine import ByzantineStakeholder, change_instance


def raw(data: Any) -> bytes:
    return json.dumps(data).encode()


async def _until(condition, timeout: float = 10.0) -> None:
    """Poll a counter that has no event to wait on, with a deadline."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


# -- consensus ---------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [math.nan, math.inf, -1, "1", None, True])
def test_a_proposal_with_a_bad_timeout_is_refused(timeout: Any) -> None:
    body = {"session": "s", "group": "g", "proposer": "p", "value": 1, "participants": [], "timeout": timeout}
    with pytest.raises(Exception, match="timeout|not JSON"):
        parse_proposal(raw(body), 100.0)


def test_a_huge_timeout_is_cut_to_the_maximum() -> None:
    body = {"session": "s", "group": "g", "value": 1, "participants": ["a"], "timeout": 1e300}
    assert parse_proposal(raw(body), 100.0).deadline == 100.0 + MAX_TIMEOUT


async def test_a_flood_of_proposals_keeps_the_voters_tasks_bounded(nc) -> None:
    release = asyncio.Event()

    async def slow(proposal) -> str:
        await release.wait()
        return YES

    async with Voter(nc, "g", "me", slow, max_concurrent=2, max_pending=5) as voter:
        inbox = nc.new_inbox()
        for i in range(50):
            body = {"session": f"s{i}", "group": "g", "value": i, "participants": [], "timeout": 1e300}
            await nc.publish(proposals_of("g").replace("*", f"s{i}"), codec.encode(body), reply=inbox)
        for bad in (b"nope", raw({"session": "x", "group": "g", "timeout": math.nan})):
            await nc.publish(proposals_of("g").replace("*", "bad"), bad, reply=inbox)
        await _until(lambda: voter.stats.dropped + len(voter._tasks) == 50 and voter.stats.malformed == 2)
        assert len(voter._tasks) == 5 and voter.stats.dropped == 45
        release.set()
        await _until(lambda: voter.stats.voted == 5)


# -- market ------------------------------------------------------------------------------


async def test_cfps_with_non_finite_or_huge_deadlines_never_pin_an_agent(nc, monkeypatch) -> None:
    monkeypatch.setattr(market_participant, "MAX_PENDING", 4)
    seen: list[m.CallForProposals] = []

    def bid(cfp: m.CallForProposals) -> float:
        seen.append(cfp)
        return 1.0

    async with ContractNetParticipant(nc, "pool", "agent", bid=bid, perform=lambda cfp: None) as agent:
        inbox = nc.new_inbox()
        answers: list[Any] = []

        async def collect(msg) -> None:
            answers.append(msg)

        await nc.subscribe(inbox, cb=collect)

        async def cfp(cid: str, **fields: Any) -> None:
            headers = {m.H_PERFORMATIVE: m.CFP, m.H_CONVERSATION: cid, m.H_SENDER: "evil", m.H_REPLY_TO: inbox}
            await nc.publish(m.cfp_subject("pool", cid), raw({"v": 1, "task": 1, **fields}), headers=headers)

        for i, (reply_by, within) in enumerate([(math.nan, 1), (1, math.inf), (1e300, 1e300), ("x", 1)]):
            await cfp(f"c{i}", reply_by=reply_by, reply_within=within)
        await cfp("c9", reply_by=time.time() + 1, reply_within=1, to="agentX")  # a string is not a list
        for i in range(10):
            await cfp(f"d{i}", reply_by=1e300, reply_within=1e300, round=1)
        await _until(lambda: len(answers) == 11)
        assert {c.conversation_id for c in seen} == {"c2", *(f"d{i}" for i in range(10))}
        assert all(c.reply_by <= time.time() + MAX_REPLY_WINDOW and c.reply_within <= MAX_REPLY_WINDOW for c in seen)
        assert len(agent._pending) == 4 and agent.pending <= 4


def test_combinatorial_auction_counts_only_valid_bids_for_the_exact_rule() -> None:
    valid = [Bid(f"b{i}", 1.0 + i, frozenset({f"i{i}"})) for i in range(3)]
    invalid = [Bid(f"x{i}", 5.0, frozenset({"unknown"})) for i in range(30)]
    outcome = combinatorial_auction([*valid, *invalid], items=[f"i{i}" for i in range(3)], exact_limit=24)
    assert outcome.mechanism == "vcg"
    assert len(outcome.rejected) == 30


# -- Byzantine agreement -----------------------------------------------------------------

IDS = ["a", "b", "c", "d"]


async def _participants(nats_url: str) -> tuple[list[Participant], list[Any]]:
    signers = [Signer(i, new_seed()) for i in IDS]
    directory = StaticKeyDirectory({s.id: s.public_key for s in signers})
    conns = [await connect(nats_url, name=f"bft-{s.id}") for s in signers]
    return [Participant(nc, s, directory, rebroadcast_interval=0.05) for nc, s in zip(conns, signers)], conns


async def test_a_late_member_decides_a_value_near_the_size_limit(nats_url) -> None:
    parts, conns = await _participants(nats_url)
    try:
        big = "x" * (MAX_VALUE_BYTES - 100)
        leader = next(p for p in parts if p.id == proposer(IDS, "g", "big", 0))
        early = [leader, *[p for p in parts if p is not leader][:2]]
        late = next(p for p in parts if p not in early)
        decided = await asyncio.gather(*(p.decide("g", big, 30, instance="big") for p in early))
        assert {v for v, _ in decided} == {big}
        value, cert = await late.decide("g", "small", 30, instance="big")
        assert value == big and cert.value == big
        with pytest.raises(Exception, match="exceeds"):
            await leader.decide("g", "y" * (MAX_VALUE_BYTES + 1), 5, instance="huge")
    finally:
        for p in parts:
            await p.close()
        for nc in conns:
            await nc.close()


async def test_a_decision_carries_its_value_once(nats_url, nc) -> None:
    parts, conns = await _participants(nats_url)
    decisions: list[bytes] = []

    async def watch(msg) -> None:
        decisions.append(msg.data)

    await nc.subscribe(subject("g", "once", DECISION), cb=watch)
    await nc.flush()
    try:
        value = "v" * 1000
        await asyncio.gather(*(p.decide("g", value, 20, instance="once") for p in parts))
        await _until(lambda: decisions)
        body = json.loads(decisions[0])
        assert body["value"] == value and "value" not in body["certificate"]
        assert decisions[0].count(value.encode()) == 1
    finally:
        for p in parts:
            await p.close()
        for c in conns:
            await c.close()


async def test_equivocations_of_a_byzantine_member_do_not_grow_memory(nats_url, nc) -> None:
    parts, conns = await _participants(nats_url)
    liar_signer = Signer("d", new_seed())
    try:
        honest = parts[0]
        # Keep the instance open: only one honest member takes part.
        task = asyncio.create_task(honest.decide("g", "v", 30, instance="eq"))
        await _until(lambda: honest.running("g", "eq"))
        # The liar is member "d" (its key is the directory's); it signs many different prevotes of round 0.
        liar = parts[3].signer
        for i in range(REFUSED_MEMORY + 500):
            vote = Message(kind=PREVOTE, group="g", instance="eq", round=0, sender="d",
                           digest=f"{i:064x}").signed(liar)
            await nc.publish(subject("g", "eq", PREVOTE), vote.encode())
        await nc.flush()
        await _until(lambda: honest.rejected("g", "eq")["equivocation"] >= REFUSED_MEMORY + 499, 30)
        auth = honest._instances[("g", "eq")].machine._auth
        assert len(auth._seen) < 10 and len(auth._raw) < 10 and len(auth._refused) <= REFUSED_MEMORY
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        del liar_signer
        for p in parts:
            await p.close()
        for c in conns:
            await c.close()


async def test_change_requests_are_clamped_and_instances_bounded(nats_url, nc) -> None:
    parts, conns = await _participants(nats_url)
    space = ParameterSpace([FloatVar("lr", 0.1, 0.0, 1.0)])
    member = ByzantineStakeholder(parts[0], space, max_timeout=2.0, max_running=3)
    inbox = nc.new_inbox()
    answers: list[dict] = []

    async def collect(msg) -> None:
        answers.append(json.loads(msg.data))

    await nc.subscribe(inbox, cb=collect)
    try:
        async with member:
            def request(version: int, timeout: Any) -> bytes:
                change = {"name": "lr", "value": 0.5, "version": version, "previous": 0.1, "proposer": "evil",
                          "reason": "", "session": f"s{version}"}
                return raw({"v": 1, "group": "variables", "instance": change_instance("lr", version),
                            "timeout": timeout, "change": change})

            for version, timeout in enumerate([math.nan, math.inf, "x"]):
                await nc.publish(subject("variables", change_instance("lr", version), "request"),
                                 request(version, timeout), reply=inbox)
            for version in range(10, 20):
                await nc.publish(subject("variables", change_instance("lr", version), "request"),
                                 request(version, 1e300), reply=inbox)
            await _until(lambda: member.stats["busy"] == 7 and member.stats["malformed"] == 3)
            assert len(member._pending) == 3
            # The three running instances end within max_timeout, not 1e300 seconds.
            await _until(lambda: not member._pending, 20)
            assert sum(1 for a in answers if a.get("reason", "").startswith("busy")) == 7
    finally:
        for p in parts:
            await p.close()
        for c in conns:
            await c.close()


async def test_a_flood_of_unaddressed_answers_is_bounded_for_the_initiator(nc) -> None:
    from protocols.market.initiator import MAX_STRANGERS, ContractNetInitiator

    flooded = asyncio.Event()
    inbox = nc.new_inbox()

    async def flood(msg) -> None:
        headers = msg.headers or {}
        cid, reply_to = headers[m.H_CONVERSATION], headers[m.H_REPLY_TO]
        for i in range(3 * MAX_STRANGERS):
            sender = f"s{i}"
            await nc.publish(m.answer_subject(reply_to, sender), raw({"price": 0.0}), headers={
                m.H_PERFORMATIVE: m.PROPOSE, m.H_CONVERSATION: cid, m.H_SENDER: sender, m.H_REPLY_TO: inbox})
        await nc.flush()
        flooded.set()

    async def bid(cfp: m.CallForProposals) -> float:
        await flooded.wait()  # the real bid comes after the flood
        return 2.0

    await nc.subscribe(m.cfp_wildcard("fl"), cb=flood)
    async with ContractNetParticipant(nc, "fl", "a", bid=bid, perform=lambda cfp: "done"):
        initiator = ContractNetInitiator(nc, "fl", participants=["a"], reply_within=5.0)
        result = await initiator.run({"n": 1}, task_id="t1")
    assert (result.winner, result.price) == ("a", 2.0)
    (conv,) = result.conversations
    rejected = [r for r in conv.sent(m.REJECT) if r.body.get("reason") == m.NOT_ADDRESSED]
    assert len(rejected) == MAX_STRANGERS  # the rest are neither remembered nor answered


async def test_a_false_quota_service_cannot_grant_more_than_asked_or_forever(nc, nats_url) -> None:
    from protocols.quota import QuotaClient
    from protocols.quota.wire import MAX_REPLY_SECONDS, request_subject

    async def impostor(msg) -> None:
        await msg.respond(raw({"v": 1, "ok": True, "op": "tokens", "tokens": 2**62, "expires_in": 1e300}))

    await nc.subscribe(request_subject("fake"), cb=impostor)
    await nc.flush()
    other = await connect(nats_url, name="client")
    client = QuotaClient(other, "fake", "fake.0", batch=5, timeout=10)
    try:
        await client.acquire()
        assert client.tokens_granted == 5 and client.available() == 4
        (grant,) = client._grants
        assert grant[1] <= asyncio.get_running_loop().time() + MAX_REPLY_SECONDS
    finally:
        await client.close()
        await other.close()
