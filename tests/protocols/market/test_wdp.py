"""Exact winner determination: branch and bound against brute force."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.market import SearchLimitError, solve_exact

from .helpers import BUNDLES, PROPERTY, brute_force

instances = st.lists(st.tuples(st.sampled_from(BUNDLES), st.integers(0, 12)), max_size=11)


@PROPERTY
@given(bids=instances)
def test_branch_and_bound_matches_brute_force_including_the_tie_break(bids: list[tuple[frozenset[str], int]]) -> None:
    bundles = [bundle for bundle, _ in bids]
    amounts = [float(a) for _, a in bids]
    welfare, winners = brute_force(bundles, amounts)
    found = solve_exact(bundles, amounts)
    assert (found.welfare, found.winners) == (welfare, winners)


@PROPERTY
@given(bids=instances, data=st.data())
def test_excluded_bids_never_win_and_the_rest_is_optimal(
    bids: list[tuple[frozenset[str], int]], data: st.DataObject
) -> None:
    bundles = [bundle for bundle, _ in bids]
    amounts = [float(a) for _, a in bids]
    excluded = frozenset(data.draw(st.sets(st.integers(0, max(len(bids) - 1, 0)))) if bids else set())
    kept = [0.0 if j in excluded else a for j, a in enumerate(amounts)]
    found = solve_exact(bundles, amounts, exclude=excluded)
    assert not excluded & set(found.winners)
    assert (found.welfare, found.winners) == brute_force(bundles, kept)


def test_ties_prefer_the_earliest_bids() -> None:
    bundles = [frozenset("a"), frozenset("ab"), frozenset("b")]
    assert solve_exact(bundles, [5.0, 10.0, 5.0]).winners == (0, 2)
    assert solve_exact(bundles[1:] + bundles[:1], [10.0, 5.0, 5.0]).winners == (0,)


def test_zero_bids_never_win_and_no_bids_give_an_empty_allocation() -> None:
    assert solve_exact([frozenset("a")], [0.0]).winners == ()
    assert solve_exact([], []).winners == ()


def test_search_gives_up_at_its_node_limit() -> None:
    bundles = [frozenset(s) for s in ("ab", "bc", "cd", "da", "a", "b", "c", "d")]
    with pytest.raises(SearchLimitError, match="greedy"):
        solve_exact(bundles, [3.0] * 8, max_nodes=3)
