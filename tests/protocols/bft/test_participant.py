"""Participants on a real nats-server, in one process: decide, refuse, time out, catch up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from broker import connect
from protocols.bft import (
    DecisionTimeoutError,
    InvalidInstanceError,
    InvalidProposalError,
    MembershipError,
    Participant,
    Signer,
    StaticKeyDirectory,
    digest,
    new_seed,
    proposer,
    subject,
    verify_certificate,
)
from protocols.bft.messages import PREVOTE, Message

IDS = ["a", "b", "c", "d"]


@pytest.fixture
async def members(nats_url: str) -> AsyncIterator[list[Participant]]:
    signers = [Signer(i, new_seed()) for i in IDS]
    directory = StaticKeyDirectory({s.id: s.public_key for s in signers})
    conns = [await connect(nats_url, name=f"bft-{s.id}") for s in signers]
    parts = [Participant(nc, s, directory, rebroadcast_interval=0.05) for nc, s in zip(conns, signers)]
    try:
        yield parts
    finally:
        for p in parts:
            await p.close()
        for nc in conns:
            await nc.close()


async def _until(condition, timeout: float = 10.0) -> None:
    """Poll a condition that has no event to wait on (refusal counters), with a deadline."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_four_members_decide_one_value_with_a_verifiable_certificate(members, nc) -> None:
    seen: list[str] = []

    async def watch(msg) -> None:
        seen.append(msg.subject)

    sub = await nc.subscribe("coord.bft.g.x.*", cb=watch)
    await nc.flush()
    results = await asyncio.gather(*(p.decide("g", f"from-{p.id}", 10, instance="x") for p in members))
    values = {v for v, _ in results}
    assert len(values) == 1
    leader = proposer(IDS, "g", "x", 0)
    assert values == {f"from-{leader}"}
    keys = members[0].directory.members("g")
    for _, cert in results:
        assert verify_certificate(cert.to_dict(), keys) == f"from-{leader}"
    await sub.unsubscribe()
    assert {subject("g", "x", k) for k in ("proposal", "prevote", "precommit")} <= set(seen)


async def test_default_instances_follow_each_members_sequence(members) -> None:
    first = await asyncio.gather(*(p.decide("g", p.id, 10) for p in members))
    second = await asyncio.gather(*(p.decide("g", p.id, 10) for p in members))
    assert {c.instance for _, c in first} == {"0"} and {c.instance for _, c in second} == {"1"}


async def test_own_invalid_proposal_and_non_members_are_refused(members, nc) -> None:
    with pytest.raises(InvalidProposalError, match="fails validation"):
        await members[0].decide("g", -1, 1, instance="y", validate=lambda v: v >= 0)
    with pytest.raises(InvalidProposalError, match="not JSON"):
        await members[0].decide("g", {1: object()}, 1, instance="y")
    with pytest.raises(InvalidInstanceError, match="reserved"):
        await members[0].decide("g", 1, 1, instance="_control")
    with pytest.raises(InvalidInstanceError, match="white space"):
        await members[0].decide("g", 1, 1, instance="a.b")
    outsider = Participant(nc, Signer("z", new_seed()), members[0].directory)
    with pytest.raises(MembershipError, match="not a member"):
        await outsider.decide("g", 1, 1, instance="y")


async def test_without_a_quorum_decide_times_out_and_lets_go(members) -> None:
    # Two of four: below the quorum of three, nothing can be decided.
    with pytest.raises(DecisionTimeoutError, match="no decision in g/t after 0.5s"):
        await asyncio.gather(*(p.decide("g", p.id, 0.5, instance="t") for p in members[:2]))
    assert not members[0].running("g", "t")


async def test_a_cancelled_caller_stops_taking_part(members) -> None:
    task = asyncio.create_task(members[0].decide("g", "x", 30, instance="c"))
    await _until(lambda: members[0].running("g", "c"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not members[0].running("g", "c")


async def test_forged_and_foreign_messages_on_the_subject_are_refused(members, nc) -> None:
    a, b = members[0], members[1]
    pending = [asyncio.create_task(p.decide("g", p.id, 10, instance="f")) for p in (a, b)]
    await _until(lambda: a.running("g", "f"))
    vote = Message(kind=PREVOTE, group="g", instance="f", round=0, sender="c", digest=digest("evil"))
    forged = vote.signed(b.signer)  # c's vote under b's key
    await nc.publish(subject("g", "f", PREVOTE), forged.encode())
    await nc.publish(subject("g", "f", PREVOTE), vote.encode())  # unsigned
    await nc.publish(subject("g", "f", PREVOTE), replace(vote, instance="other").signed(b.signer).encode())
    await _until(lambda: {"forged", "unsigned", "wrong-instance"} <= set(a.rejected("g", "f")))
    # The two missing members arrive late; the forgeries changed nothing.
    late = [asyncio.create_task(p.decide("g", p.id, 10, instance="f")) for p in members[2:]]
    results = await asyncio.gather(*pending, *late)
    assert len({v for v, _ in results}) == 1


async def test_isolated_member_catches_up_after_healing(members) -> None:
    cut = members[3]
    cut.paused = True
    pending = asyncio.create_task(cut.decide("g", "mine", 20, instance="h"))
    results = await asyncio.gather(*(p.decide("g", p.id, 10, instance="h") for p in members[:3]))
    assert not pending.done()
    cut.paused = False
    value, cert = await asyncio.wait_for(pending, 10)
    assert value == results[0][0]
    assert verify_certificate(cert, cut.directory.members("g")) == value


async def test_late_joiner_gets_the_decision_from_lingering_members(members) -> None:
    early = await asyncio.gather(*(p.decide("g", p.id, 10, instance="l") for p in members[:3]))
    value, _ = await members[3].decide("g", "late", 10, instance="l")
    assert value == early[0][0]
