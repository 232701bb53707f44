"""Revenue equivalence: with i.i.d. uniform values, the four standard auctions earn the same on average.

For n bidders with values uniform on [0, 1] the expected revenue of every
standard auction is (n - 1) / (n + 1) — the expected second-highest value —
when bidders play the symmetric equilibrium: truthful in Vickrey,
straightforward in English, and b(v) = v (n - 1) / n in first-price and Dutch.
A fixed seed makes the sample (and the test) deterministic; the tolerance is
four standard errors of the sample mean, plus the English increment.
"""

from __future__ import annotations

import math
import random
import statistics

import pytest

from protocols.market import Bid, DutchAuction, first_price, run_clock, vickrey

from .test_english import straightforward

N_BIDDERS = 3
AUCTIONS = 1500
INCREMENT = 0.01
GRID = 1000  # the Dutch clock and first-price bids live on a 0.001 grid


def test_revenue_equivalence_with_a_fixed_seed() -> None:
    rng = random.Random(20240806)
    revenue: dict[str, list[float]] = {"vickrey": [], "english": [], "first-price": [], "dutch": []}
    for _ in range(AUCTIONS):
        values = [rng.random() for _ in range(N_BIDDERS)]
        shaded = [math.floor(v * (N_BIDDERS - 1) / N_BIDDERS * GRID) / GRID for v in values]
        revenue["vickrey"].append(vickrey([Bid(f"v{i}", v) for i, v in enumerate(values)]).revenue)
        revenue["english"].append(straightforward(values, INCREMENT).close(1e12).revenue)
        revenue["first-price"].append(first_price([Bid(f"v{i}", b) for i, b in enumerate(shaded)]).revenue)
        clock = DutchAuction(start_price=1.0, decrement=1 / GRID)
        revenue["dutch"].append(run_clock(clock, [(f"v{i}", b) for i, b in enumerate(shaded)]).revenue)

    expected = (N_BIDDERS - 1) / (N_BIDDERS + 1)
    means = {name: statistics.fmean(r) for name, r in revenue.items()}
    for name, sample in revenue.items():
        tolerance = 4 * statistics.stdev(sample) / math.sqrt(len(sample)) + (INCREMENT if name == "english" else 0)
        message = f"{name}: mean revenue {means[name]:.4f}, expected {expected:.4f}"
        assert abs(means[name] - expected) < tolerance, message
    # Dutch and first-price are the same game: the same revenue auction by auction
    # (up to the float rounding of the clock's start - k * decrement).
    assert revenue["dutch"] == pytest.approx(revenue["first-price"], abs=1e-12)
