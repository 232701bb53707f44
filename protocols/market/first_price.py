"""First-price sealed-bid auction of one item.

Rule: every bidder submits one sealed bid. The highest bid at or above the
reserve wins and the winner pays its own bid. No bid at or above the reserve:
the item stays unsold. Ties go to the bid submitted first (see
:mod:`protocols.market.bids`).

Strategically this is the same game as the Dutch auction: a bidder who would
claim the Dutch clock at price ``b`` bids ``b`` here, and both give the same
winner and price (tests/protocols/market/test_dutch.py checks it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from protocols.market.bids import LOT, Award, Bid, Outcome, ranked, screen
from protocols.metrics import cleared


@cleared("first_price")
def first_price(
    bids: Iterable[Bid],
    *,
    item: str = LOT,
    reserve: float = 0.0,
    budgets: Mapping[str, float] | None = None,
) -> Outcome:
    """Run a first-price sealed-bid auction.

    Args:
        bids: the sealed bids, in submission order.
        item: the item on sale; bids must name exactly it.
        reserve: the lowest winning bid.
        budgets: bidder -> largest amount it may bid.

    Returns:
        The outcome (mechanism ``"first-price"``), with rejected bids.
    """
    valid, rejected = screen(bids, items=(item,), budgets=budgets)
    order = [ib for ib in ranked(valid) if ib[1].amount >= reserve]
    awards: tuple[Award, ...] = ()
    if order:
        best = order[0][1]
        awards = (Award(best.bidder, best.items, best.amount, best.amount),)
    return Outcome("first-price", awards, tuple(rejected))
