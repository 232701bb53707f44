"""Shared hypothesis settings and small reference implementations for the market tests."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from hypothesis import HealthCheck, settings

# Derandomized: the same examples on every run, so a failure reproduces and CI never flakes.
PROPERTY = settings(derandomize=True, deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
HEAVY = settings(derandomize=True, deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])

ITEMS = ("a", "b", "c", "d")
BUNDLES = [frozenset(c) for r in range(1, len(ITEMS) + 1) for c in itertools.combinations(ITEMS, r)]


def brute_force(bundles: Sequence[frozenset[str]], amounts: Sequence[float]) -> tuple[float, tuple[int, ...]]:
    """Best packing by enumerating every subset; ties to the lexicographically smallest index tuple."""
    best: tuple[float, tuple[int, ...]] = (0.0, ())
    positive = [j for j in range(len(bundles)) if amounts[j] > 0]
    for r in range(1, len(positive) + 1):
        for combo in itertools.combinations(positive, r):
            union: set[str] = set()
            size = 0
            for j in combo:
                union |= bundles[j]
                size += len(bundles[j])
            if len(union) != size:
                continue
            value = sum(amounts[j] for j in combo)
            if value > best[0] or (value == best[0] and combo < best[1]):
                best = (value, combo)
    return best
