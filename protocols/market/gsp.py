"""Generalized second-price (GSP) auction for ``k`` ranked slots.

Rule: every bidder submits one sealed per-click bid ``b_i``; each has a quality
weight ``q_i`` (default 1). Bids below the reserve are out. The rest are
ranked by ``q_i * b_i``, highest first (ties: submitted first). The bidder in
rank ``s`` (``s = 1..k``) gets slot ``s`` and pays per click the least bid
that would keep its rank::

    p_s = max(reserve, q_{s+1} * b_{s+1} / q_s)      (p_s = reserve if nobody ranks below)

With unit qualities this is "pay the next bid". With one slot GSP is the
Vickrey auction. GSP is not truthful for ``k > 1`` (a bidder may gain by
shading to a lower slot); what it guarantees, and what the tests check, is
that nobody pays more than its bid and that each slot goes to one bidder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from protocols.market.bids import LOT, Award, Bid, Outcome, screen
from protocols.market.errors import MarketError
from protocols.metrics import cleared


@cleared("gsp")
def gsp(
    bids: Iterable[Bid],
    *,
    slots: int,
    item: str = LOT,
    reserve: float = 0.0,
    budgets: Mapping[str, float] | None = None,
    quality: Mapping[str, float] | None = None,
) -> Outcome:
    """Run a GSP auction.

    Args:
        bids: per-click bids, in submission order; bids must name ``item``.
        slots: the number of slots ``k`` (at least 1).
        item: the name of what is sold (the query or page).
        reserve: the lowest per-click bid and price.
        budgets: bidder -> largest per-click bid it may make.
        quality: bidder -> positive quality weight (click-through factor); default 1.

    Returns:
        The outcome (mechanism ``"gsp"``), awards in slot order with ``slot`` set.

    Raises:
        MarketError: ``slots < 1`` or a quality weight is not positive.
    """
    if slots < 1:
        raise MarketError(f"a GSP auction needs at least one slot, got {slots}")
    weights = quality or {}
    if any(not w > 0 for w in weights.values()):
        raise MarketError("GSP quality weights must be positive numbers")
    valid, rejected = screen(bids, items=(item,), budgets=budgets)
    eligible = [(i, b) for i, b in valid if b.amount >= reserve]

    def q(bid: Bid) -> float:
        return weights.get(bid.bidder, 1.0)

    order = sorted(eligible, key=lambda ib: (-q(ib[1]) * ib[1].amount, ib[0]))
    awards = []
    for rank, (_, bid) in enumerate(order[:slots]):
        price = reserve
        if rank + 1 < len(order):
            nxt = order[rank + 1][1]
            # min(...) only guards float rounding of q*b/q; the ranking already implies it.
            price = max(reserve, min(bid.amount, q(nxt) * nxt.amount / q(bid)))
        awards.append(Award(bid.bidder, bid.items, bid.amount, price, slot=rank + 1))
    return Outcome("gsp", tuple(awards), tuple(rejected))
