"""Proposal scoring and participant pricing."""

from __future__ import annotations

import pytest

from protocols.market import (
    MarketError,
    Proposal,
    load_price,
    lowest_price,
    reputation_weighted,
)


def proposal(sender: str, price: float) -> Proposal:
    return Proposal(sender, price, {"price": price}, 0.0)


def test_lowest_price_prefers_cheaper_proposals() -> None:
    assert lowest_price(proposal("a", 3)) > lowest_price(proposal("b", 4))


def test_reputation_weighted_scores_expected_price_per_success() -> None:
    reputation = {"reliable": 0.9, "flaky": 0.3, "zero": 0.0}
    score = reputation_weighted(reputation.__getitem__, floor=0.1)
    assert score(proposal("reliable", 9)) == pytest.approx(-10)
    assert score(proposal("flaky", 6)) == pytest.approx(-20)
    assert score(proposal("zero", 1)) == pytest.approx(-10)  # floored, so still finite
    assert score(proposal("reliable", 9)) > score(proposal("flaky", 6))  # a discount does not buy trust


def test_reputation_weighted_rejects_a_bad_floor() -> None:
    with pytest.raises(MarketError):
        reputation_weighted(lambda a: 1.0, floor=0)


def test_load_price_grows_with_load_and_refuses_when_full() -> None:
    prices = [load_price(10, load, 4) for load in range(4)]
    assert prices[0] == 10 and prices == sorted(prices) and len(set(prices)) == 4
    with pytest.raises(MarketError, match="refuse"):
        load_price(10, 4, 4)
