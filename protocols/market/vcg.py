"""Combinatorial auction with exact winner determination and VCG payments.

Rule (single-minded bidders: one bundle bid each):

1. Invalid bids are rejected (see :mod:`protocols.market.bids`); a second bid
   of the same bidder is rejected as ``duplicate-bidder``.
2. Allocation: the exact welfare-maximising packing ``A*`` of the valid bids
   (:func:`protocols.market.wdp.solve_exact`, ties to the earliest bids).
3. Payment (Clarke pivot): winner ``i`` pays the welfare the others would
   have had without it, minus the welfare the others have with it::

       p_i = W*(bids without i) - (W*(all bids) - b_i)

   Losers pay nothing.

Guarantees (property-tested against brute force): reporting one's true
bundle and value is a dominant strategy (no unilateral deviation improves
utility, because ``A*`` maximises reported welfare exactly); payments are
between 0 and the winner's bid (individual rationality, hence within budget);
no item is sold twice. Amounts are summed as floats: welfares within
``tolerance`` count as equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from protocols.market.bids import Award, Bid, Outcome, screen
from protocols.market.wdp import DEFAULT_TOLERANCE, solve_exact


def vcg(
    bids: Iterable[Bid],
    *,
    items: Iterable[str],
    budgets: Mapping[str, float] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    max_nodes: int = 2_000_000,
) -> Outcome:
    """Run the exact combinatorial auction with VCG payments.

    Args:
        bids: bundle bids in submission order, at most one per bidder.
        items: the items on sale.
        budgets: bidder -> largest amount it may bid.
        tolerance: welfare difference treated as a tie.
        max_nodes: search limit of each winner determination.

    Returns:
        The outcome (mechanism ``"vcg"``), awards in submission order.

    Raises:
        SearchLimitError: the instance is too large for exact search.
    """
    valid, rejected = screen(bids, items=items, budgets=budgets)
    bundles = [b.items for _, b in valid]
    amounts = [b.amount for _, b in valid]
    best = solve_exact(bundles, amounts, tolerance=tolerance, max_nodes=max_nodes)
    awards = []
    for j in best.winners:
        without = solve_exact(bundles, amounts, exclude=frozenset({j}), tolerance=tolerance, max_nodes=max_nodes)
        others_with = best.welfare - amounts[j]
        # Clamp float noise: exact arithmetic gives 0 <= p <= b_j.
        payment = min(amounts[j], max(0.0, without.welfare - others_with))
        bid = valid[j][1]
        awards.append(Award(bid.bidder, bid.items, bid.amount, payment))
    return Outcome("vcg", tuple(awards), tuple(rejected))
