from __future__ import annotations

import math

import pytest

from protocols.market import LOT, Bid, check, screen
from protocols.market import bids as b


@pytest.mark.parametrize(
    ("bid", "reason"),
    [
        (Bid("x", -0.01), b.NEGATIVE),
        (Bid("x", math.nan), b.NOT_FINITE),
        (Bid("x", math.inf), b.NOT_FINITE),
        (Bid("x", 11.0), b.OVER_BUDGET),
        (Bid("x", 1.0, "ghost"), b.UNKNOWN_ITEM),
        (Bid("x", 1.0, {"lot", "ghost"}), b.UNKNOWN_ITEM),
        (Bid("x", 1.0, ()), b.EMPTY_BUNDLE),
    ],
)
def test_invalid_bids_are_rejected_with_their_reason(bid: Bid, reason: str) -> None:
    rejection = check(bid, items=(LOT,), budgets={"x": 10.0})
    assert rejection is not None
    assert rejection.reason == reason
    assert rejection.bid == bid


def test_valid_bids_pass_including_the_whole_budget_and_zero() -> None:
    assert check(Bid("x", 10.0), items=(LOT,), budgets={"x": 10.0}) is None
    assert check(Bid("x", 0), items=(LOT,)) is None
    assert check(Bid("y", 1e9), items=(LOT,), budgets={"x": 10.0}) is None  # no budget: no limit


def test_items_are_normalised_to_a_frozenset() -> None:
    assert Bid("x", 1, "a").items == frozenset({"a"})
    assert Bid("x", 1, ["a", "b", "a"]).items == frozenset({"a", "b"})
    assert Bid("x", 1).items == frozenset({LOT})


def test_screen_keeps_the_first_bid_of_each_bidder_and_the_submission_index() -> None:
    bids = [Bid("x", 5), Bid("y", -1), Bid("x", 9), Bid("z", 3)]
    valid, rejected = screen(bids, items=(LOT,))
    assert valid == [(0, bids[0]), (3, bids[3])]
    assert [(r.bid, r.reason) for r in rejected] == [(bids[1], b.NEGATIVE), (bids[2], b.DUPLICATE_BIDDER)]


def test_an_invalid_first_bid_does_not_block_a_valid_later_one() -> None:
    bids = [Bid("x", -5), Bid("x", 5)]
    valid, rejected = screen(bids, items=(LOT,))
    assert valid == [(1, bids[1])]
    assert [r.reason for r in rejected] == [b.NEGATIVE]
