"""Dutch auction: the clock, claims, and strategic equivalence with first-price sealed bids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.market import Bid, DutchAuction, InvalidBidError, first_price, run_clock
from protocols.market import bids as b

from .helpers import PROPERTY


def test_the_clock_falls_by_the_decrement_each_tick_down_to_the_reserve() -> None:
    auction = DutchAuction(start_price=10, decrement=2, tick=0.5, reserve=3, opens_at=100)
    assert [auction.price(100 + k * 0.5) for k in range(5)] == [10, 8, 6, 4, 3]
    assert auction.price(99.9) is None  # not open yet
    assert auction.price(102.49) == 3  # the reserve shows for one tick
    assert auction.price(102.5) is None  # then the clock stops
    assert auction.closes_at == 102.5


def test_the_first_claim_wins_at_the_current_clock_price() -> None:
    auction = DutchAuction(start_price=10, decrement=1, reserve=2)
    award = auction.claim("a", 3.2)
    assert (award.bidder, award.payment) == ("a", 7)
    with pytest.raises(InvalidBidError) as info:
        auction.claim("b", 3.2)
    assert info.value.reason == b.SOLD
    assert auction.close().winner == "a"
    assert auction.price(3.5) is None


def test_claims_outside_the_clock_or_over_budget_are_rejected() -> None:
    auction = DutchAuction(start_price=10, decrement=1, reserve=2, opens_at=0, budgets={"poor": 5})
    with pytest.raises(InvalidBidError) as info:
        auction.claim("poor", 1)  # the clock shows 9
    assert info.value.reason == b.OVER_BUDGET
    auction.claim("poor", 5)  # the clock shows 5: within budget
    assert auction.close().awards[0].payment == 5

    unsold = DutchAuction(start_price=10, decrement=1, reserve=2, opens_at=0)
    for now in (-1, unsold.closes_at):
        with pytest.raises(InvalidBidError) as info:
            unsold.claim("a", now)
        assert info.value.reason == b.CLOSED
    assert unsold.close().awards == ()


def test_nobody_at_or_above_the_reserve_leaves_the_item_unsold() -> None:
    out = run_clock(DutchAuction(start_price=10, decrement=1, reserve=5), [("a", 4), ("b", 4.9)])
    assert out.awards == ()


PRICES = [x / 4 for x in range(0, 41)]  # the clock's grid: 10, 9.75, ..., 0


@PROPERTY
@given(
    plans=st.lists(st.sampled_from(PRICES), max_size=6),
    reserve=st.sampled_from([0.0, 2.5, 6.0]),
)
def test_dutch_and_first_price_sealed_bid_agree_for_the_same_strategies(plans: list[float], reserve: float) -> None:
    bidders = [(f"x{i}", p) for i, p in enumerate(plans)]
    dutch = run_clock(DutchAuction(start_price=10, decrement=0.25, reserve=reserve), bidders)
    sealed = first_price([Bid(name, p) for name, p in bidders], reserve=reserve)
    assert [(a.bidder, a.payment) for a in dutch.awards] == [(a.bidder, a.payment) for a in sealed.awards]
