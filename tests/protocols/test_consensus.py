from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from broker import codec, connect, subjects
from protocols.consensus import (
    ABSTAIN,
    Ballot,
    ConsensusError,
    DecisionExistsError,
    Quorum,
    Tally,
    Voter,
    propose,
    read_decision,
    registry_finder,
    vote_subject,
)
from protocols.registry import Entry, MemoryBackend, Registry

ROOT = Path(__file__).resolve().parents[2]


async def _voters(nc, group: str, answers: dict[str, object]) -> list[Voter]:
    voters = [Voter(nc, group, vid, lambda p, a=answer: a) for vid, answer in answers.items()]
    for v in voters:
        await v.start()
    return voters


async def _stop(voters: list[Voter]) -> None:
    for v in voters:
        await v.stop()


async def test_quorum_reached_is_stored_and_published(nc) -> None:
    voters = await _voters(nc, "g", {"a": True, "b": True, "c": "yes", "d": False, "e": False})
    published: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_decision(msg) -> None:
        if not published.done():
            published.set_result(codec.decode(msg.data))

    sub = await nc.subscribe(subjects.coord("consensus", "g", "s1", "decision"), cb=on_decision)
    decision = await propose(nc, "g", {"x": 1}, participants=list("abcde"), deadline=5.0, session="s1")
    assert decision.outcome == "accepted" and decision.accepted
    assert len(decision.yes) == 3 and set(decision.yes) <= {"a", "b", "c"}
    assert decision.value == {"x": 1} and decision.total_weight == 5
    assert await read_decision(nc, "g", "s1") == decision
    assert (await asyncio.wait_for(published, 2.0))["outcome"] == "accepted"
    await sub.unsubscribe()
    with pytest.raises(DecisionExistsError, match="fresh session"):
        await propose(nc, "g", 2, participants=["a"], deadline=1.0, session="s1")
    await _stop(voters)


async def test_quorum_missed_when_the_yes_side_cannot_win(nc) -> None:
    voters = await _voters(nc, "g", {"a": True, "b": True, "c": False, "d": False, "e": False})
    decision = await propose(nc, "g", 1, participants=list("abcde"), deadline=5.0)
    assert decision.outcome == "rejected"
    assert sorted(decision.no) == ["c", "d", "e"]  # certain only once all three said no
    assert decision.elapsed_ms < 5000  # decided once certain, not at the deadline
    await _stop(voters)


async def test_threshold_and_weights(nc) -> None:
    voters = await _voters(nc, "g", {"a": True, "b": True, "c": True, "d": True, "e": False})
    strict = await propose(nc, "g", 1, participants=list("abcde"), quorum=Quorum.fraction(1.0), deadline=5.0)
    assert strict.outcome == "rejected" and strict.quorum == "fraction>=1"
    four = await propose(nc, "g", 1, participants=list("abcde"), quorum=Quorum.at_least(4), deadline=5.0)
    assert four.accepted
    await _stop(voters)
    voters = await _voters(nc, "w", {"big": True, "s1": False, "s2": False, "s3": False})
    heavy = await propose(nc, "w", 1, participants=["big", "s1", "s2", "s3"],
                          quorum=Quorum.majority({"big": 4}), deadline=5.0)
    assert heavy.accepted and heavy.total_weight == 7 and heavy.yes_weight == 4
    await _stop(voters)


async def test_abstentions_count_in_the_total_but_not_as_yes(nc) -> None:
    voters = await _voters(nc, "g", {"a": True, "b": ABSTAIN, "c": Ballot(ABSTAIN, "no stake")})
    decision = await propose(nc, "g", 1, participants=["a", "b", "c"], deadline=5.0)
    assert decision.outcome == "rejected"
    # Two abstentions of three already rule out a majority, with or without a's yes.
    assert decision.abstain == ["b", "c"] and decision.no == []
    assert decision.yes + decision.unanswered == ["a"]
    assert decision.reasons == {"c": "no stake"}
    await _stop(voters)


async def test_participants_found_by_capability(nc) -> None:
    voters = await _voters(nc, "g", {"a": True, "b": True, "z": False})
    asked: list[str] = []

    async def finder(capability: str) -> list[str]:
        asked.append(capability)
        return ["a", "b"]

    decision = await propose(nc, "g", 1, capability="planner", finder=finder, deadline=5.0)
    assert asked == ["planner"] and decision.accepted and decision.total_weight == 2
    await _stop(voters)


async def test_participants_found_in_the_registry(nc) -> None:
    registry = Registry(MemoryBackend())
    await registry.start()
    for agent, caps in (("plan.0", ["planner"]), ("plan.1", ["planner", "echo"]), ("echo.0", ["echo"])):
        await registry.register(Entry.new(agent, pool=agent.split(".")[0], node="n", pid=1, capabilities=caps))
    voters = await _voters(nc, "g", {"plan.0": True, "plan.1": True, "echo.0": False})
    decision = await propose(nc, "g", 1, capability="planner", finder=registry_finder(registry), deadline=5.0)
    # Only the planners were asked: both yes is a majority of 2, the echo agent's no never counted.
    assert decision.accepted and decision.yes == ["plan.0", "plan.1"] and decision.total_weight == 2
    await _stop(voters)
    await registry.close()


async def test_participant_crashing_mid_round_denies_a_decision(nc, nats_url) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.protocols.test_consensus", nats_url, "g", "crasher",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )
    assert await asyncio.wait_for(child.stdout.readline(), 20.0) == b"ready\n"
    voters = await _voters(nc, "g", {"y1": True, "y2": True, "n1": False, "a1": ABSTAIN})
    decision = await propose(nc, "g", 1, participants=["y1", "y2", "n1", "a1", "crasher"], deadline=1.0)
    assert await asyncio.wait_for(child.wait(), 10.0) == -signal.SIGKILL
    # 2 yes of 5: the crashed voter could have made 3, so the round times out.
    assert decision.outcome == "timeout"
    assert decision.unanswered == ["crasher"]
    await _stop(voters)


async def test_duplicate_stranger_and_late_votes_are_ignored(nc) -> None:
    async def raw_participant(msg) -> None:
        session = codec.decode(msg.data)["session"]
        for voter in ("raw", "raw", "mallory"):  # a duplicate and a stranger
            await nc.publish(vote_subject("g", session, voter), codec.encode({"session": session, "voter": voter, "vote": "yes"}))
        # A vote naming "late" on raw's subject counts for nobody: the subject says who sent it.
        await nc.publish(vote_subject("g", session, "raw"), codec.encode({"session": session, "voter": "late", "vote": "yes"}))

    sub = await nc.subscribe("coord.consensus.g.*.propose", cb=raw_participant)
    release = asyncio.Event()

    async def slow(_proposal) -> bool:
        await release.wait()  # answers only after the decision exists
        return True

    voters = await _voters(nc, "g", {"b": False})
    late = Voter(nc, "g", "late", slow)
    await late.start()
    decision = await propose(nc, "g", 1, participants=["raw", "b", "late"], deadline=0.5, session="dup")
    assert decision.outcome == "timeout"  # one counted yes of three, the late voter could have tipped it
    assert decision.yes == ["raw"] and decision.no == ["b"] and decision.unanswered == ["late"]
    # The voter's own deadline runs from when it heard the proposal, a moment after
    # the proposer's: release its callback only once that deadline has passed too.
    async with asyncio.timeout(10):
        while late.stats.late == 0 and late.stats.voted == 0:
            await asyncio.sleep(0.01)
    release.set()
    # A vote sent after the decision changes nothing.
    await nc.publish(vote_subject("g", "dup", "late"), codec.encode({"session": "dup", "voter": "late", "vote": "yes"}))
    await nc.flush()
    assert await read_decision(nc, "g", "dup") == decision
    assert late.stats.late == 1 and late.stats.voted == 0
    await sub.unsubscribe()
    await late.stop()
    await _stop(voters)


def test_tally_rules() -> None:
    tally = Tally(["a", "b", "c"], Quorum.majority(), deadline=10.0)
    assert tally.add("a", Ballot("yes"), now=1.0) == "counted"
    assert tally.add("a", Ballot("no"), now=1.0) == "duplicate"
    assert tally.add("x", Ballot("yes"), now=1.0) == "stranger"
    assert tally.add("b", Ballot("yes"), now=10.5) == "late"
    assert tally.outcome() is None
    assert tally.add("b", Ballot("yes"), now=2.0) == "counted"
    assert tally.outcome() == "accepted"
    assert tally.close() == "accepted"
    assert tally.add("c", Ballot("no"), now=3.0) == "late"  # closed
    assert Tally(["a", "b"], Quorum.majority(), 1.0).close() == "timeout"


async def test_bad_rounds_are_refused(nc) -> None:
    with pytest.raises(ConsensusError, match="no participants"):
        await propose(nc, "g", 1, participants=[])
    with pytest.raises(ConsensusError, match="capability and a finder"):
        await propose(nc, "g", 1)
    with pytest.raises(ConsensusError, match="can never be reached"):
        await propose(nc, "g", 1, participants=["a", "b"], quorum=Quorum.at_least(3))
    with pytest.raises(ConsensusError, match="bad consensus name"):
        await propose(nc, "a.b", 1, participants=["a"])
    with pytest.raises(ConsensusError, match="fraction quorum"):
        Quorum.fraction(1.5)


async def _crashing_voter(url: str, group: str, voter_id: str) -> None:
    nc = await connect(url, name=voter_id)

    def crash(_proposal) -> bool:
        os.kill(os.getpid(), signal.SIGKILL)  # dies holding the proposal, before voting
        return True

    async with Voter(nc, group, voter_id, crash):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_crashing_voter(*sys.argv[1:4]))
