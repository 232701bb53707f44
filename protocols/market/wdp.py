"""Exact winner determination for combinatorial auctions, by branch and bound.

Problem: given bundle bids ``(S_j, v_j)``, choose pairwise disjoint bundles
maximising ``sum v_j`` (weighted set packing; NP-hard, so this is for small
instances). Only bids with ``v_j > 0`` may win: a zero bid expresses no value.

Search (item-based branching, as in CASS): items are taken in a fixed order.
At the first item not yet covered, branch on every compatible bid whose
lowest item (in that order) is this item, then on leaving the item unsold.
Each packing is reached by exactly one path. A branch is cut when its value
plus an optimistic bound for the untouched items cannot reach the incumbent:
the bound gives each remaining item the best per-item share
``max v_j / |S_j|`` over the bids containing it, which no packing exceeds.

Tie-break: among packings of equal welfare (within ``tolerance``), the one
whose sorted bid indices are lexicographically smallest wins — the earliest
submitted bid is preferred, as everywhere in the market. Cuts are strict so
that equal-welfare packings are still compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocols.market.errors import SearchLimitError

DEFAULT_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Allocation:
    """Winning bids (indices into the input, ascending) and their total value."""

    winners: tuple[int, ...]
    welfare: float


def solve_exact(
    bundles: Sequence[frozenset[str]],
    amounts: Sequence[float],
    *,
    exclude: frozenset[int] = frozenset(),
    tolerance: float = DEFAULT_TOLERANCE,
    max_nodes: int = 2_000_000,
) -> Allocation:
    """The welfare-maximising packing of bundle bids.

    Args:
        bundles: the item set of each bid.
        amounts: the amount of each bid (same length).
        exclude: indices that may not win (VCG re-solves without a bidder).
        tolerance: welfares this close count as equal (then the tie-break decides).
        max_nodes: search nodes before giving up.

    Returns:
        The optimal allocation (``winners`` ascending).

    Raises:
        SearchLimitError: the search needed more than ``max_nodes`` nodes.
    """
    live = [j for j in range(len(bundles)) if j not in exclude and amounts[j] > 0 and bundles[j]]
    if not live:
        return Allocation((), 0.0)
    # Items with more bids first: branching there settles the most conflicts early.
    count: dict[str, int] = {}
    for j in live:
        for item in bundles[j]:
            count[item] = count.get(item, 0) + 1
    order = sorted(count, key=lambda it: (-count[it], it))
    bit = {item: i for i, item in enumerate(order)}
    m = len(order)
    masks = {j: sum(1 << bit[it] for it in bundles[j]) for j in live}
    share = [0.0] * m
    for j in live:
        per_item = amounts[j] / len(bundles[j])
        for item in bundles[j]:
            share[bit[item]] = max(share[bit[item]], per_item)
    suffix = [0.0] * (m + 1)
    for t in range(m - 1, -1, -1):
        suffix[t] = suffix[t + 1] + share[t]
    # Bids keyed by their lowest item; within a bin try high amounts first.
    bins: list[list[int]] = [[] for _ in range(m)]
    for j in live:
        low = (masks[j] & -masks[j]).bit_length() - 1
        bins[low].append(j)
    for b in bins:
        b.sort(key=lambda j: (-amounts[j], j))

    best_value = 0.0
    best_key: tuple[int, ...] = ()
    nodes = 0
    chosen: list[int] = []

    def offer(value: float) -> None:
        nonlocal best_value, best_key
        if value > best_value + tolerance:
            best_value, best_key = value, tuple(sorted(chosen))
        elif value >= best_value - tolerance:
            key = tuple(sorted(chosen))
            if key < best_key:
                best_value, best_key = max(best_value, value), key

    def search(t: int, used: int, value: float, ahead: float) -> None:
        # ``ahead``: the shares of items at positions >= t that are already used.
        nonlocal nodes
        nodes += 1
        if nodes > max_nodes:
            raise SearchLimitError(f"winner determination stopped after {max_nodes} nodes; use the greedy mechanism")
        while t < m and used >> t & 1:
            ahead -= share[t]
            t += 1
        if t == m:
            offer(value)
            return
        if value + suffix[t] - ahead < best_value - tolerance:
            return
        for j in bins[t]:
            mask = masks[j]
            if used & mask:
                continue
            added = sum(share[i] for i in range(t, m) if mask >> i & 1)
            chosen.append(j)
            search(t, used | mask, value + amounts[j], ahead + added)
            chosen.pop()
        search(t + 1, used, value, ahead)

    search(0, 0, 0.0, 0.0)
    return Allocation(best_key, sum(amounts[j] for j in best_key))
