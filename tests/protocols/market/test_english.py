"""English auction: increment, reserve, soft close, closing, and straightforward bidding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.market import (
    AuctionOpenError,
    Bid,
    EnglishAuction,
    InvalidBidError,
    TimeOrderError,
)
from protocols.market import bids as b

from .helpers import PROPERTY


def reason_of(auction: EnglishAuction, bid: Bid, now: float) -> str:
    with pytest.raises(InvalidBidError) as info:
        auction.bid(bid, now)
    return info.value.reason


def test_bids_must_open_at_the_reserve_and_then_beat_the_leader_by_the_increment() -> None:
    auction = EnglishAuction(ends_at=100, min_increment=1.0, reserve=5)
    assert reason_of(auction, Bid("a", 4.5), 1) == b.BELOW_RESERVE
    auction.bid(Bid("a", 5), 2)
    assert reason_of(auction, Bid("b", 5.5), 3) == b.BELOW_INCREMENT
    auction.bid(Bid("b", 6), 4)
    assert auction.leader == Bid("b", 6)
    assert auction.minimum_bid() == 7
    assert [r.reason for r in auction.rejected] == [b.BELOW_RESERVE, b.BELOW_INCREMENT]


def test_invalid_bids_are_rejected_and_leave_the_auction_unchanged() -> None:
    auction = EnglishAuction(ends_at=100, min_increment=1.0, budgets={"poor": 3})
    auction.bid(Bid("a", 2), 1)
    assert reason_of(auction, Bid("poor", 4), 2) == b.OVER_BUDGET
    assert reason_of(auction, Bid("c", -1), 3) == b.NEGATIVE
    assert reason_of(auction, Bid("c", 9, "other"), 4) == b.UNKNOWN_ITEM
    assert auction.leader == Bid("a", 2) and auction.ends_at == 100


def test_soft_close_extends_on_late_bids_only() -> None:
    auction = EnglishAuction(ends_at=100, min_increment=1, soft_close=10, extension=15)
    auction.bid(Bid("a", 1), 89.9)  # more than 10 s before the end: no extension
    assert auction.ends_at == 100
    auction.bid(Bid("b", 2), 95)  # inside the window: end moves to 95 + 15
    assert auction.ends_at == 110
    auction.bid(Bid("a", 3), 109)
    assert auction.ends_at == 124
    assert auction.is_open(123.9) and not auction.is_open(124)
    assert reason_of(auction, Bid("b", 10), 124) == b.CLOSED
    out = auction.close(124)
    assert (out.winner, out.awards[0].payment) == ("a", 3)


def test_close_before_the_end_and_time_going_backwards_are_errors() -> None:
    auction = EnglishAuction(ends_at=10, min_increment=1)
    auction.bid(Bid("a", 1), 5)
    with pytest.raises(AuctionOpenError):
        auction.close(9.99)
    with pytest.raises(TimeOrderError):
        auction.bid(Bid("b", 3), 4)
    assert auction.close(10).winner == "a"


def test_no_bid_leaves_the_item_unsold() -> None:
    assert EnglishAuction(ends_at=1, min_increment=1).close(1).awards == ()


def test_min_increment_must_be_positive() -> None:
    with pytest.raises(Exception, match="min_increment"):
        EnglishAuction(ends_at=1, min_increment=0)


def straightforward(values: list[float], increment: float, reserve: float = 0.0) -> EnglishAuction:
    """Bidders in turn raise to the minimum bid while it is within their value."""
    auction = EnglishAuction(ends_at=1e12, min_increment=increment, reserve=reserve)
    now, moved = 0.0, True
    while moved:
        moved = False
        for i, value in enumerate(values):
            lead = auction.leader
            if (lead is None or lead.bidder != f"v{i}") and auction.minimum_bid() <= value:
                now += 1
                auction.bid(Bid(f"v{i}", auction.minimum_bid()), now)
                moved = True
    return auction


@PROPERTY
@given(values=st.lists(st.integers(0, 200), min_size=2, max_size=5, unique=True), reserve=st.sampled_from([0, 50]))
def test_straightforward_bidding_sells_to_the_highest_value_near_the_second_value(
    values: list[int], reserve: int
) -> None:
    increment = 1.0
    out = straightforward([float(v) for v in values], increment, reserve).close(1e12)
    top, second = sorted(values)[-1], sorted(values)[-2]
    if top < reserve:
        assert out.awards == ()
        return
    assert out.winner == f"v{values.index(top)}"
    price = out.awards[0].payment
    assert price <= top
    if second < reserve:
        assert price == reserve  # the top bidder opens at the reserve and nobody can follow
    else:
        assert second - increment < price <= second + increment
