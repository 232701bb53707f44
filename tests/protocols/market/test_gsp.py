"""Generalized second price: ranking, next-bid prices, reserve, quality, and k = 1 == Vickrey."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.market import Bid, MarketError, gsp, vickrey

from .helpers import PROPERTY


def test_each_slot_pays_the_next_bid() -> None:
    out = gsp([Bid("a", 3), Bid("b", 7), Bid("c", 5), Bid("d", 1)], slots=3)
    assert [(a.slot, a.bidder, a.payment) for a in out.awards] == [(1, "b", 5), (2, "c", 3), (3, "a", 1)]


def test_the_last_slot_pays_the_reserve_when_nobody_ranks_below() -> None:
    out = gsp([Bid("a", 3), Bid("b", 7), Bid("c", 1)], slots=3, reserve=2)
    assert [(a.bidder, a.payment) for a in out.awards] == [("b", 3), ("a", 2)]


def test_quality_weights_rank_by_weighted_bid_and_scale_the_price() -> None:
    out = gsp([Bid("a", 4), Bid("b", 3)], slots=2, quality={"a": 1.0, "b": 2.0})
    # b ranks first (6 > 4) and pays the least bid keeping 2*p >= 4: p = 2.
    assert [(a.bidder, a.payment) for a in out.awards] == [("b", 2.0), ("a", 0.0)]


def test_slots_must_be_positive() -> None:
    with pytest.raises(MarketError, match="slot"):
        gsp([], slots=0)


@PROPERTY
@given(amounts=st.lists(st.integers(0, 30), max_size=7), reserve=st.sampled_from([0, 4]))
def test_one_slot_gsp_is_the_vickrey_auction(amounts: list[int], reserve: int) -> None:
    bids = [Bid(f"x{i}", float(a)) for i, a in enumerate(amounts)]
    one = gsp(bids, slots=1, reserve=reserve)
    second = vickrey(bids, reserve=reserve)
    assert [(a.bidder, a.payment) for a in one.awards] == [(a.bidder, a.payment) for a in second.awards]


@PROPERTY
@given(
    amounts=st.lists(st.integers(0, 30), max_size=8),
    slots=st.integers(1, 4),
    weights=st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=8, max_size=8),
)
def test_gsp_is_individually_rational_and_sells_each_slot_once(
    amounts: list[int], slots: int, weights: list[float]
) -> None:
    bids = [Bid(f"x{i}", float(a)) for i, a in enumerate(amounts)]
    out = gsp(bids, slots=slots, quality={f"x{i}": w for i, w in enumerate(weights)})
    assert [a.slot for a in out.awards] == list(range(1, len(out.awards) + 1))
    assert len({a.bidder for a in out.awards}) == len(out.awards)
    assert len(out.awards) == min(slots, len(bids))
    for award in out.awards:
        assert 0 <= award.payment <= award.bid
