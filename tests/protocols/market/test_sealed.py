"""First-price and Vickrey sealed-bid auctions: rules, edge cases, and Vickrey's truthfulness."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocols.market import Bid, first_price, vickrey
from protocols.market import bids as b

from .helpers import PROPERTY

GRID = [x / 2 for x in range(0, 41)]  # 0, 0.5, ..., 20


def test_vickrey_winner_pays_the_second_highest_bid() -> None:
    out = vickrey([Bid("a", 10), Bid("b", 7), Bid("c", 3)])
    assert (out.winner, out.awards[0].payment, out.awards[0].bid) == ("a", 7, 10)
    assert out.revenue == 7


def test_vickrey_reserve_above_the_second_bid_sets_the_price() -> None:
    out = vickrey([Bid("a", 10), Bid("b", 4)], reserve=6)
    assert (out.winner, out.awards[0].payment) == ("a", 6)


def test_vickrey_single_bid_pays_the_reserve() -> None:
    out = vickrey([Bid("a", 10)], reserve=2.5)
    assert (out.winner, out.awards[0].payment) == ("a", 2.5)


def test_no_bid_at_or_above_the_reserve_leaves_the_item_unsold() -> None:
    for mechanism in (vickrey, first_price):
        assert mechanism([Bid("a", 4.99), Bid("b", 3)], reserve=5).awards == ()
        assert mechanism([], reserve=0).awards == ()


def test_a_bid_equal_to_the_reserve_wins() -> None:
    assert vickrey([Bid("a", 5)], reserve=5).awards[0].payment == 5
    assert first_price([Bid("a", 5)], reserve=5).winner == "a"


def test_ties_go_to_the_first_submitted_bid_at_the_tied_price() -> None:
    out = vickrey([Bid("b", 8), Bid("a", 8), Bid("c", 1)])
    assert (out.winner, out.awards[0].payment) == ("b", 8)
    assert first_price([Bid("z", 8), Bid("a", 8)]).winner == "z"


def test_rejected_bids_neither_win_nor_set_the_price() -> None:
    bids = [Bid("a", 10), Bid("b", 50), Bid("c", -3), Bid("d", 9, "other"), Bid("e", 6)]
    out = vickrey(bids, budgets={"b": 20})
    assert (out.winner, out.awards[0].payment) == ("a", 6)
    assert sorted(r.reason for r in out.rejected) == [b.NEGATIVE, b.OVER_BUDGET, b.UNKNOWN_ITEM]


def test_first_price_winner_pays_its_own_bid() -> None:
    out = first_price([Bid("a", 6), Bid("b", 9), Bid("c", 2)], reserve=1)
    assert (out.winner, out.awards[0].payment) == ("b", 9)


@PROPERTY
@given(
    others=st.lists(st.sampled_from(GRID), max_size=5),
    value=st.sampled_from(GRID),
    position=st.integers(0, 5),
    reserve=st.sampled_from([0.0, 2.5, 7.0]),
)
def test_vickrey_no_deviation_on_the_grid_beats_bidding_the_value(
    others: list[float], value: float, position: int, reserve: float
) -> None:
    def utility(amount: float) -> float:
        bids = [Bid(f"o{i}", x) for i, x in enumerate(others)]
        bids.insert(min(position, len(bids)), Bid("me", amount))
        return vickrey(bids, reserve=reserve).utility("me", value)

    truthful = utility(value)
    assert truthful >= 0  # individual rationality
    for deviation in GRID:
        assert utility(deviation) <= truthful, f"bidding {deviation} beats the value {value}"


@PROPERTY
@given(amounts=st.lists(st.sampled_from(GRID), min_size=1, max_size=6), reserve=st.sampled_from([0.0, 3.0]))
def test_vickrey_payment_is_between_the_reserve_and_the_winning_bid(amounts: list[float], reserve: float) -> None:
    out = vickrey([Bid(f"x{i}", a) for i, a in enumerate(amounts)], reserve=reserve)
    if max(amounts) < reserve:
        assert out.awards == ()
        return
    (award,) = out.awards
    assert award.bid == max(amounts)
    assert reserve <= award.payment <= award.bid
    assert award.payment == max([reserve, *sorted(amounts)[-2:-1]])
