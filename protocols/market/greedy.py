"""The Lehmann–O'Callaghan–Shoham greedy combinatorial auction.

Rule (single-minded bidders: one bundle bid ``(S_i, b_i)`` each):

1. Invalid bids are rejected (see :mod:`protocols.market.bids`); a second bid
   of the same bidder is rejected as ``duplicate-bidder``. Bids of 0 cannot win.
2. Rank bids by ``b_i / sqrt(|S_i|)``, highest first (ties: submitted first).
3. Allocation: walk the ranking and grant each bid whose bundle is disjoint
   from every bundle granted so far.
4. Payment (critical value): run step 3 again without winner ``i``; let ``j``
   be the first granted bid in that run whose bundle meets ``S_i``. Then ``i``
   pays the least bid that would still rank it ahead of ``j``::

       p_i = b_j * sqrt(|S_i|) / sqrt(|S_j|)          (p_i = 0 if there is no such j)

   Losers pay nothing.

Guarantees: the allocation is monotone (a higher bid or a smaller bundle
never turns a winner into a loser) and each winner pays its critical value,
so truth-telling is dominant for single-minded bidders; ``0 <= p_i <= b_i``;
no item is sold twice; the welfare is within ``sqrt(m)`` of the optimum for
``m`` items. It runs in ``O(n^2)`` for ``n`` bids, so it serves instances too
large for :mod:`protocols.market.vcg`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from protocols.market.bids import Award, Bid, Outcome, screen


def lehmann_greedy(
    bids: Iterable[Bid],
    *,
    items: Iterable[str],
    budgets: Mapping[str, float] | None = None,
) -> Outcome:
    """Run the LOS greedy auction with critical-value payments.

    Args:
        bids: bundle bids in submission order, at most one per bidder.
        items: the items on sale.
        budgets: bidder -> largest amount it may bid.

    Returns:
        The outcome (mechanism ``"lehmann-greedy"``), awards in rank order.
    """
    on_sale = frozenset(items)
    valid, rejected = screen(bids, items=on_sale, budgets=budgets)
    bit = {item: i for i, item in enumerate(sorted(on_sale))}
    entries = [
        (b.amount / math.sqrt(len(b.items)), index, sum(1 << bit[it] for it in b.items), b)
        for index, b in valid
        if b.amount > 0
    ]
    order = sorted(entries, key=lambda e: (-e[0], e[1]))
    masks = [e[2] for e in order]
    winners = _grant(masks, skip=None)
    awards = []
    for w in winners:
        bid = order[w][3]
        payment = 0.0
        for j in _grant(masks, skip=w):
            if masks[j] & masks[w]:
                # j's rank key times sqrt|S_i| is the bid at which i would tie j.
                payment = min(bid.amount, order[j][0] * math.sqrt(len(bid.items)))
                break
        awards.append(Award(bid.bidder, bid.items, bid.amount, payment))
    return Outcome("lehmann-greedy", tuple(awards), tuple(rejected))


def _grant(masks: Sequence[int], skip: int | None) -> list[int]:
    """Positions granted by the greedy walk over ranked bundle masks."""
    used = 0
    granted = []
    for pos, mask in enumerate(masks):
        if pos == skip or used & mask:
            continue
        used |= mask
        granted.append(pos)
    return granted
