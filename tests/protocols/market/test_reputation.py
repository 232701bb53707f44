"""Beta reputation (bounded, monotone, forgetting, whitewashing) and EigenTrust (cliques)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.market import BetaReputation, EigenTrust, MarketError, TimeOrderError

from .helpers import PROPERTY

history = st.lists(st.tuples(st.booleans(), st.floats(0, 30)), max_size=30)


def replay(rep: BetaReputation, agent: str, events: list[tuple[bool, float]]) -> float:
    now = 0.0
    for success, gap in events:
        now += gap
        rep.observe(agent, success, now)
    return now


@PROPERTY
@given(
    events=history,
    forgetting=st.sampled_from([0.5, 0.9, 1.0]),
    a=st.sampled_from([1.0, 2.0]),
    b=st.sampled_from([1.0, 3.0]),
)
def test_beta_scores_are_bounded_and_monotone_in_evidence(
    events: list[tuple[bool, float]], forgetting: float, a: float, b: float
) -> None:
    rep = BetaReputation(prior_positive=a, prior_negative=b, forgetting=forgetting, period=10)
    now = replay(rep, "x", events)
    score = rep.score("x", now)
    assert 0 < score < 1
    good, bad = BetaReputation(prior_positive=a, prior_negative=b, forgetting=forgetting, period=10), BetaReputation(
        prior_positive=a, prior_negative=b, forgetting=forgetting, period=10
    )
    replay(good, "x", events)
    replay(bad, "x", events)
    good.observe("x", True, now)
    bad.observe("x", False, now)
    assert bad.score("x", now) <= score <= good.score("x", now)


@PROPERTY
@given(events=history, extra=st.integers(1, 5))
def test_more_successes_in_the_same_history_never_lower_the_score(events: list[tuple[bool, float]], extra: int) -> None:
    base = BetaReputation(forgetting=0.9, period=10)
    better = BetaReputation(forgetting=0.9, period=10)
    now = replay(base, "x", events)
    replay(better, "x", [(True, 0.0)] * extra + events)
    assert better.score("x", now) >= base.score("x", now)


def test_new_and_whitewashed_identities_start_at_the_prior() -> None:
    rep = BetaReputation(prior_positive=1, prior_negative=3)
    assert rep.score("newcomer", 0) == rep.prior == 0.25
    for t in range(10):
        rep.observe("cheat", False, t)
    assert rep.score("cheat", 10) < rep.prior
    rep.forget("cheat")  # abandons the identity ...
    assert rep.score("cheat", 10) == rep.prior  # ... and comes back at the prior, no better
    for t in range(10):
        rep.observe("honest", True, t)
    assert rep.score("honest", 10) > rep.prior  # a record of good work beats a fresh start


def test_forgetting_pulls_scores_back_toward_the_prior() -> None:
    rep = BetaReputation(forgetting=0.5, period=10)
    for t in range(5):
        rep.observe("x", False, t)
    scores = [rep.score("x", 5 + dt) for dt in (0, 10, 50, 500)]
    assert scores == sorted(scores)
    assert scores[-1] == pytest.approx(rep.prior, abs=1e-6)
    keep = BetaReputation(forgetting=1.0)
    keep.observe("x", False, 0)
    assert keep.score("x", 0) == keep.score("x", 1e9)


def test_beta_rejects_bad_parameters_and_time_going_backwards() -> None:
    with pytest.raises(MarketError):
        BetaReputation(prior_positive=0)
    with pytest.raises(MarketError):
        BetaReputation(forgetting=1.5)
    rep = BetaReputation()
    rep.observe("x", True, 10)
    with pytest.raises(TimeOrderError):
        rep.observe("x", True, 9)


def honest_world(trust: EigenTrust, honest: list[str], rounds: int = 20) -> None:
    for _ in range(rounds):
        for i in honest:
            for j in honest:
                trust.rate(i, j, satisfied=True)


def test_eigentrust_scores_sum_to_one_and_favour_agents_rated_well() -> None:
    trust = EigenTrust(["p"])
    honest = ["p", "h1", "h2", "h3"]
    honest_world(trust, honest)
    for _ in range(5):
        trust.rate("h1", "bad", satisfied=False)
    scores = trust.scores()
    assert sum(scores.values()) == pytest.approx(1.0)
    assert scores["bad"] == 0
    assert all(scores[h] > 0.1 for h in honest)


def test_a_colluding_clique_gets_nothing_when_nobody_honest_vouches_for_it() -> None:
    trust = EigenTrust(["p1", "p2"])
    honest = ["p1", "p2", "h1", "h2", "h3", "h4"]
    clique = [f"c{i}" for i in range(5)]
    honest_world(trust, honest)
    for _ in range(100):
        for i in clique:
            for j in clique:
                trust.rate(i, j, satisfied=True)  # self-ratings are ignored, the rest inflates each other
            trust.rate(i, "h1", satisfied=False)
    scores = trust.scores()
    assert sum(scores[c] for c in clique) == 0
    assert trust.normalized()["p1"] > 0.5


def test_one_honest_rating_leaks_little_into_a_clique() -> None:
    trust = EigenTrust(["p"], alpha=0.15)
    honest = ["p"] + [f"h{i}" for i in range(9)]
    clique = [f"c{i}" for i in range(5)]
    honest_world(trust, honest)
    trust.rate("h1", "c0", satisfied=True)  # one good deal with a clique member
    for _ in range(100):
        for i in clique:
            for j in clique:
                trust.rate(i, j, satisfied=True)
    scores = trust.scores()
    # h1 holds about 1/10 of the trust and gives 1/(20*10+1) of its local trust to c0;
    # the clique keeps what enters until alpha returns it, so it stays well below h1's own share.
    assert sum(scores[c] for c in clique) < 0.01
    assert min(scores[h] for h in honest) > 0.05


def test_eigentrust_needs_pretrusted_agents_and_a_valid_alpha() -> None:
    with pytest.raises(MarketError):
        EigenTrust([])
    with pytest.raises(MarketError):
        EigenTrust(["p"], alpha=1.0)
