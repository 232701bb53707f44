"""Combinatorial auctions (exact VCG and LOS greedy): truthfulness, rationality, feasibility."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.market import (
    Bid,
    Outcome,
    combinatorial_auction,
    lehmann_greedy,
    solve_exact,
    vcg,
)
from protocols.market import bids as b

from .helpers import BUNDLES, HEAVY, ITEMS, PROPERTY

Mechanism = Callable[..., Outcome]
Bidder = tuple[frozenset[str], int]  # single-minded: (bundle, value)
single_minded = st.lists(st.tuples(st.sampled_from(BUNDLES), st.integers(0, 12)), min_size=1, max_size=5)
DEVIATION_AMOUNTS = [float(x) for x in range(0, 15, 2)] + [0.5, 5.5, 11.5]


def true_utility(outcome: Outcome, bidder: str, bundle: frozenset[str], value: float) -> float:
    award = outcome.award_of(bidder)
    if award is None:
        return 0.0
    return (value if bundle <= award.items else 0.0) - award.payment


def check_no_profitable_deviation(mechanism: Mechanism, bidders: list[tuple[frozenset[str], int]], who: int) -> None:
    bundle, value = bidders[who][0], float(bidders[who][1])

    def run(report: Bid) -> Outcome:
        bids = [Bid(f"x{i}", float(v), s) for i, (s, v) in enumerate(bidders)]
        bids[who] = report
        return mechanism(bids, items=ITEMS)

    truthful = true_utility(run(Bid(f"x{who}", value, bundle)), f"x{who}", bundle, value)
    assert truthful >= -1e-9  # individual rationality
    for lie in BUNDLES:
        for amount in DEVIATION_AMOUNTS:
            got = true_utility(run(Bid(f"x{who}", amount, lie)), f"x{who}", bundle, value)
            assert got <= truthful + 1e-9, f"reporting ({sorted(lie)}, {amount}) beats ({sorted(bundle)}, {value})"


def check_feasible_and_rational(outcome: Outcome) -> None:
    sold: set[str] = set()
    for award in outcome.awards:
        assert not sold & award.items, "an item was sold twice"
        sold |= award.items
        assert -1e-9 <= award.payment <= award.bid + 1e-9
    assert len({a.bidder for a in outcome.awards}) == len(outcome.awards)


@HEAVY
@given(bidders=single_minded, data=st.data())
def test_vcg_no_unilateral_deviation_improves_utility(bidders: list[Bidder], data: st.DataObject) -> None:
    check_no_profitable_deviation(vcg, bidders, data.draw(st.integers(0, len(bidders) - 1)))


@HEAVY
@given(bidders=single_minded, data=st.data())
def test_greedy_no_unilateral_deviation_improves_utility(bidders: list[Bidder], data: st.DataObject) -> None:
    check_no_profitable_deviation(lehmann_greedy, bidders, data.draw(st.integers(0, len(bidders) - 1)))


@PROPERTY
@given(bids=st.lists(st.tuples(st.sampled_from(BUNDLES), st.integers(0, 20)), max_size=9))
def test_vcg_allocates_exactly_and_charges_clarke_prices(bids: list[tuple[frozenset[str], int]]) -> None:
    out = vcg([Bid(f"x{i}", float(v), s) for i, (s, v) in enumerate(bids)], items=ITEMS)
    check_feasible_and_rational(out)
    bundles, amounts = [s for s, _ in bids], [float(v) for _, v in bids]
    best = solve_exact(bundles, amounts)
    assert sorted(a.bidder for a in out.awards) == sorted(f"x{j}" for j in best.winners)
    for j in best.winners:
        without = solve_exact(bundles, amounts, exclude=frozenset({j})).welfare
        assert out.award_of(f"x{j}").payment == without - (best.welfare - amounts[j])


@PROPERTY
@given(bids=st.lists(st.tuples(st.sampled_from(BUNDLES), st.integers(0, 20)), max_size=12))
def test_greedy_is_feasible_rational_and_within_sqrt_m_of_optimal(bids: list[tuple[frozenset[str], int]]) -> None:
    out = lehmann_greedy([Bid(f"x{i}", float(v), s) for i, (s, v) in enumerate(bids)], items=ITEMS)
    check_feasible_and_rational(out)
    optimum = solve_exact([s for s, _ in bids], [float(v) for _, v in bids]).welfare
    welfare = sum(a.bid for a in out.awards)
    assert welfare * math.sqrt(len(ITEMS)) >= optimum - 1e-9


def test_vcg_classic_example() -> None:
    # a wants both items for 10; b and c want one each for 6: b and c win (12 > 10)
    # and each pays what its absence would let a win minus what the other gets: 10 - 6 = 4.
    out = vcg([Bid("a", 10, {"x", "y"}), Bid("b", 6, "x"), Bid("c", 6, "y")], items=("x", "y"))
    assert [(a.bidder, a.payment) for a in out.awards] == [("b", 4), ("c", 4)]


def test_greedy_critical_value_example() -> None:
    # a ranks first (10/sqrt 2 > 6); without a, b is granted and meets a's bundle:
    # a pays 6 * sqrt(2), the least bid that still ranks it first.
    out = lehmann_greedy([Bid("a", 10, {"x", "y"}), Bid("b", 6, "x"), Bid("c", 1, "y")], items=("x", "y"))
    assert [(a.bidder, round(a.payment, 9)) for a in out.awards] == [("a", round(6 * math.sqrt(2), 9))]


@pytest.mark.parametrize("mechanism", [vcg, lehmann_greedy])
def test_invalid_and_duplicate_bids_are_rejected_with_their_reason(mechanism: Mechanism) -> None:
    bids = [Bid("a", 5, "x"), Bid("a", 9, "y"), Bid("b", 3, "z"), Bid("c", 50, "y"), Bid("d", -1, "y")]
    out = mechanism(bids, items=("x", "y"), budgets={"c": 10})
    assert [(r.bid.bidder, r.reason) for r in out.rejected] == [
        ("a", b.DUPLICATE_BIDDER),
        ("b", b.UNKNOWN_ITEM),
        ("c", b.OVER_BUDGET),
        ("d", b.NEGATIVE),
    ]
    assert [a.bidder for a in out.awards] == ["a"]
    assert out.awards[0].payment == 0


def test_combinatorial_auction_is_exact_when_small_and_greedy_when_large() -> None:
    bids = [Bid(f"x{i}", 1 + i % 5, BUNDLES[i % len(BUNDLES)]) for i in range(30)]
    assert combinatorial_auction(bids[:10], items=ITEMS).mechanism == "vcg"
    assert combinatorial_auction(bids, items=ITEMS).mechanism == "lehmann-greedy"
    assert combinatorial_auction(bids[:10], items=ITEMS, exact_limit=5).mechanism == "lehmann-greedy"
    # An exact search over its node budget falls back to the greedy mechanism.
    assert combinatorial_auction(bids[:10], items=ITEMS, max_nodes=2).mechanism == "lehmann-greedy"
