"""Vickrey (second-price sealed-bid) auction of one item.

Rule: every bidder submits one sealed bid. The highest bid at or above the
reserve wins; the winner pays ``max(second-highest valid bid, reserve)``,
where the second-highest bid is taken over all other valid bids (a bid below
the reserve cannot win but can still be second — the reserve then dominates
anyway). No bid at or above the reserve: the item stays unsold. Ties go to
the bid submitted first, and the winner of a tie pays the tied amount.

Guarantees (property-tested): bidding one's value is a dominant strategy —
no other bid improves a bidder's utility, whatever the others bid — and a
truthful bidder never pays more than its value (individual rationality).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from protocols.market.bids import LOT, Award, Bid, Outcome, ranked, screen
from protocols.metrics import cleared


@cleared("vickrey")
def vickrey(
    bids: Iterable[Bid],
    *,
    item: str = LOT,
    reserve: float = 0.0,
    budgets: Mapping[str, float] | None = None,
) -> Outcome:
    """Run a Vickrey auction.

    Args:
        bids: the sealed bids, in submission order.
        item: the item on sale; bids must name exactly it.
        reserve: the lowest winning bid and the lowest price.
        budgets: bidder -> largest amount it may bid.

    Returns:
        The outcome (mechanism ``"vickrey"``), with rejected bids.
    """
    valid, rejected = screen(bids, items=(item,), budgets=budgets)
    order = ranked(valid)
    awards: tuple[Award, ...] = ()
    if order and order[0][1].amount >= reserve:
        best = order[0][1]
        second = order[1][1].amount if len(order) > 1 else reserve
        awards = (Award(best.bidder, best.items, best.amount, max(second, reserve)),)
    return Outcome("vickrey", awards, tuple(rejected))
