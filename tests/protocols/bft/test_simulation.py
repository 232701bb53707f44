"""Adversarial schedules on the simulation bus: invariants hold with f Byzantine, and break with f+1.

A failing example prints as a ``Scenario(...)`` whose ``repr`` replays it:
``check(simulate(<that repr>), ...)`` gives the same run, event for event.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, Phase, find, given, settings

from protocols.bft import proposer
from protocols.bft.sim import (
    Cut,
    Partition,
    Scenario,
    Schedule,
    check,
    member_ids,
    public_keys,
    simulate,
    validate,
)
from protocols.bft.sim.invariants import Verdict
from tests.protocols.bft.strategies import scenarios

CI = settings(derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Searching for a counterexample needs one, not the smallest one.
SEARCH = settings(CI, max_examples=300, phases=(Phase.generate,))


def verdict(scenario: Scenario, *, expect_termination: bool = True) -> Verdict:
    result = simulate(scenario)
    return check(result, public_keys=public_keys(scenario.n), validate=validate, expect_termination=expect_termination)


def leader(n: int, instance: str = "i0", round_: int = 0) -> int:
    return member_ids(n).index(proposer(member_ids(n), "g", instance, round_))


@settings(CI, max_examples=150)
@given(scenarios(n=4, bad=1))
def test_four_members_one_byzantine_keep_every_invariant(scenario: Scenario) -> None:
    assert verdict(scenario).violations == {}


@settings(CI, max_examples=40)
@given(scenarios(n=7, bad=2))
def test_seven_members_two_byzantine_keep_every_invariant(scenario: Scenario) -> None:
    assert verdict(scenario).violations == {}


@settings(CI, max_examples=40)
@given(scenarios(n=4, bad=0))
def test_honest_members_keep_every_invariant(scenario: Scenario) -> None:
    assert verdict(scenario).violations == {}


def _breaks_agreement(scenario: Scenario) -> bool:
    return "agreement" in verdict(scenario, expect_termination=False).violations


def test_checker_finds_agreement_violation_with_f_plus_one_byzantine() -> None:
    # Harness sensitivity: with f+1 = 2 liars among 4 the generated schedules
    # must include one that splits the honest members. If this failed, the
    # passing safety properties above would say nothing.
    found = find(
        scenarios(n=4, bad=2, behaviours=("twins", "equivocator", "double-voter")),
        _breaks_agreement,
        settings=SEARCH,
    )
    assert len(found.byzantine) == 2
    # The counterexample replays exactly, from its own repr.
    first, again = simulate(found), simulate(eval(repr(found), _REPLAY_NAMES))
    assert first.trace == again.trace
    assert _breaks_agreement(found)


def test_twins_alone_break_agreement_with_f_plus_one_keys() -> None:
    found = find(
        scenarios(n=4, bad=2, behaviours=("twins",)), _breaks_agreement, settings=SEARCH,
    )
    assert {b for _, b in found.byzantine} == {"twins"}


_REPLAY_NAMES = {"Scenario": Scenario, "Schedule": Schedule, "Partition": Partition, "Cut": Cut, "frozenset": frozenset}


def _lock_schedule() -> Schedule:
    # p2 (twins) leads round 0, p3 leads round 1. Until t=2, {p0, p1, p2}
    # are cut off from {p3, p2~twin}, and p1 hears no precommit or decision:
    # p0 decides evil#0 while p1 only *locks* it. From t=2, p0 (with p2) is cut
    # off; p1, p3 and p2~twin move to round 1, where p3 proposes its own value.
    return Schedule(
        seed=11, max_delay=0.02, heal_at=30.0,
        partitions=(
            Partition(0.0, 2.0, (frozenset({"p0", "p1", "p2"}), frozenset({"p3", "p2~twin"}))),
            Partition(2.0, 30.0, (frozenset({"p0", "p2"}), frozenset({"p1", "p3", "p2~twin"}))),
        ),
        cuts=(Cut(0.0, 2.0, frozenset({"p0", "p2"}), frozenset({"p1"}), frozenset({"precommit", "decision"})),),
    )


def test_lock_keeps_agreement_when_a_decision_is_hidden() -> None:
    assert leader(4) == 2 and leader(4, round_=1) == 3
    result = simulate(Scenario(n=4, byzantine=((2, "twins"),), schedule=_lock_schedule()))
    assert check(result, public_keys=public_keys(4), validate=validate).violations == {}
    assert {result.decisions[n][0].value for n in result.honest} == {"evil#0"}
    assert result.decisions["p3"][0].certificate.round > 0  # p3 got there only through p1's lock


def test_same_schedule_breaks_agreement_once_the_locked_member_forgets() -> None:
    # The control experiment: p1 forgetting its lock (a second Byzantine
    # member) is all it takes for p3 to decide another value.
    result = simulate(Scenario(n=4, byzantine=((1, "amnesiac"), (2, "twins")), schedule=_lock_schedule()))
    verdict_ = check(result, public_keys=public_keys(4), validate=validate, expect_termination=False)
    assert "agreement" in verdict_.violations
    assert result.decisions["p0"][0].value == "evil#0"
    assert result.decisions["p3"][0].value == "value-p3"


def test_same_schedule_replays_event_for_event() -> None:
    schedule = Schedule(seed=7, drop=0.3, duplicate=0.2, max_delay=1.5, heal_at=8.0,
                        partitions=(Partition(0.0, 5.0, (frozenset({"p0", "p1"}), frozenset({"p2", "p3"}))),))
    scenario = Scenario(n=4, byzantine=((1, "double-voter"),), schedule=schedule)
    a, b = simulate(scenario), simulate(scenario)
    assert a.trace == b.trace
    assert a.decided_at == b.decided_at
    reseeded = replace(schedule, seed=8)
    other = simulate(Scenario(n=4, byzantine=((1, "double-voter"),), schedule=reseeded))
    assert other.trace != a.trace


def test_equivocating_leader_cannot_split_honest_members() -> None:
    bad = leader(4)
    scenario = Scenario(n=4, byzantine=((bad, "equivocator"),), schedule=Schedule(seed=3, max_delay=0.2))
    result = simulate(scenario)
    assert check(result, public_keys=public_keys(4), validate=validate).violations == {}
    decided = {result.decisions[name][0].value for name in result.honest}
    # Every honest member was told a different value in round 0, so none
    # could gather a quorum: the decision comes from an honest proposer.
    assert len(decided) == 1 and next(iter(decided)).startswith("value-")


def test_double_votes_count_once_and_are_refused_as_equivocation() -> None:
    result = simulate(Scenario(n=4, byzantine=((0, "double-voter"),), schedule=Schedule(seed=1)))
    assert check(result, public_keys=public_keys(4), validate=validate).violations == {}
    assert result.rejected["equivocation"] > 0


def test_forgeries_are_refused_by_reason() -> None:
    result = simulate(Scenario(n=4, byzantine=((leader(4), "forger"),), schedule=Schedule(seed=1)))
    assert check(result, public_keys=public_keys(4), validate=validate).violations == {}
    assert result.rejected["forged"] > 0
    assert result.rejected["unsigned"] > 0
    assert result.rejected["unknown-sender"] > 0


def test_wrong_digest_proposal_is_refused_and_round_changes() -> None:
    result = simulate(Scenario(n=4, byzantine=((leader(4), "wrong-digest"),), schedule=Schedule(seed=1)))
    assert check(result, public_keys=public_keys(4), validate=validate).violations == {}
    assert result.rejected["wrong-digest"] >= 3
    assert {result.decisions[n][0].certificate.round for n in result.honest} == {1}


def test_replayed_old_round_and_foreign_messages_are_refused() -> None:
    # A silent round-0 leader forces round changes, so the replayer has old
    # rounds to replay; it also replays genuine votes of another instance and group.
    silent, replayer = leader(7), leader(7, round_=1)
    schedule = Schedule(seed=2, max_delay=0.1, tick=0.3)
    result = simulate(Scenario(n=7, byzantine=((silent, "silent"), (replayer, "replayer")), schedule=schedule))
    assert check(result, public_keys=public_keys(7), validate=validate).violations == {}
    assert result.rejected["wrong-instance"] > 0
    assert result.rejected["wrong-group"] > 0
    assert result.rejected["stale-round"] + result.rejected["replayed"] > 0


def test_silent_leader_is_replaced_by_a_round_change() -> None:
    result = simulate(Scenario(n=4, byzantine=((leader(4), "silent"),), schedule=Schedule(seed=1)))
    assert check(result, public_keys=public_keys(4), validate=validate).violations == {}
    assert min(result.decisions[n][0].certificate.round for n in result.honest) >= 1


def test_twins_sharing_one_key_cannot_split_the_others() -> None:
    names = ["p0", "p1", "p2", "p3", f"p{leader(4)}~twin"]
    split = (frozenset(names[:2] + [names[leader(4)]]), frozenset(names[2:4] + [names[4]]))
    schedule = Schedule(seed=5, partitions=(Partition(0.0, 10.0, split),), heal_at=10.0)
    scenario = Scenario(n=4, byzantine=((leader(4), "twins"),), schedule=schedule)
    assert verdict(scenario).violations == {}


def test_termination_waits_for_heal_then_everyone_decides() -> None:
    # Nobody can reach a quorum while each half is cut off; after healing at
    # t=12 every honest member decides.
    split = (frozenset({"p0", "p1"}), frozenset({"p2", "p3"}))
    schedule = Schedule(seed=4, partitions=(Partition(0.0, 12.0, split),), heal_at=12.0)
    result = simulate(Scenario(n=4, schedule=schedule))
    assert check(result, public_keys=public_keys(4), validate=validate).violations == {}
    assert min(result.decided_at.values()) >= 12.0
