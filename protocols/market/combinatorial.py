"""The combinatorial auction: exact VCG when the instance is small, LOS greedy when not.

Rule (single-minded bidders: one bundle bid each, bids on unknown items,
negative, non-finite or over-budget bids rejected with their reason):

* ``n <= exact_limit`` valid bids: the allocation maximises the sum of winning
  bids exactly (branch and bound, :mod:`protocols.market.wdp`) and each winner
  pays its VCG (Clarke pivot) price ``W*(-i) - (W* - b_i)``
  (:mod:`protocols.market.vcg`).
* more bids, or an exact search that exceeds its node limit: the
  Lehmann–O'Callaghan–Shoham greedy allocation by ``b / sqrt(|S|)`` with
  critical-value payments (:mod:`protocols.market.greedy`).

Both mechanisms are truthful for single-minded bidders, individually
rational, never sell an item twice, and break ties toward the earliest
submitted bid. ``Outcome.mechanism`` says which one decided.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from protocols.market.bids import Bid, Outcome, screen
from protocols.market.errors import SearchLimitError
from protocols.market.greedy import lehmann_greedy
from protocols.market.vcg import vcg
from protocols.metrics import cleared

DEFAULT_EXACT_LIMIT = 24


@cleared("combinatorial")
def combinatorial_auction(
    bids: Iterable[Bid],
    *,
    items: Iterable[str],
    budgets: Mapping[str, float] | None = None,
    exact_limit: int = DEFAULT_EXACT_LIMIT,
    max_nodes: int = 200_000,
) -> Outcome:
    """Run the combinatorial auction, exact when small, greedy when large.

    Args:
        bids: bundle bids in submission order, at most one per bidder.
        items: the items on sale.
        budgets: bidder -> largest amount it may bid.
        exact_limit: the most bids solved exactly.
        max_nodes: node limit of each exact search before falling back to greedy.

    Returns:
        The outcome; ``mechanism`` is ``"vcg"`` or ``"lehmann-greedy"``.
    """
    bids = list(bids)
    on_sale = frozenset(items)
    # The rule counts valid bids: invalid ones never enter the search.
    valid, _ = screen(bids, items=on_sale, budgets=budgets)
    if len(valid) <= exact_limit:
        try:
            return vcg(bids, items=on_sale, budgets=budgets, max_nodes=max_nodes)
        except SearchLimitError:
            pass  # too hard for exact search within budget: the greedy mechanism decides
    return lehmann_greedy(bids, items=on_sale, budgets=budgets)
