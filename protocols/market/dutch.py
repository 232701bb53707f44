"""Dutch (descending clock) auction of one item, with a reserve.

Rule:

* The clock starts at ``start_price`` at ``opens_at`` and falls by
  ``decrement`` every ``tick`` seconds; it never falls below the reserve.
  Step ``k`` (``k = floor((now - opens_at) / tick)``) shows
  ``max(reserve, start_price - k * decrement)``.
* The first bidder to claim at the current clock price wins the item at that
  price; the auction ends there. Later claims are rejected as ``sold``. When
  two bidders would claim at the same step, the one whose claim is processed
  first wins (in :func:`run_clock`, the one listed first).
* The clock shows the reserve for one last tick; after that the auction closes
  unsold and claims are rejected as ``closed``.
* A claim above the bidder's budget is rejected as ``over-budget``.
* Time is whatever the caller passes as ``now``, never the wall clock.

Strategic equivalence: a bidder who plans to claim once the clock reaches
``b`` plays exactly the first-price sealed-bid game with bid ``b``. For plans
on the clock's price grid the two auctions give the same winner and price
(property-tested in test_dutch.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from protocols.market.bids import CLOSED, LOT, SOLD, Award, Bid, Outcome, Rejection, check
from protocols.market.errors import InvalidBidError, MarketError, TimeOrderError

# Relative slack when mapping a price back to a clock step, so a plan that
# sits exactly on the grid is not pushed one step down by float rounding.
_GRID_SLACK = 1e-9


class DutchAuction:
    """A descending clock driven by injected times.

    Args:
        start_price: the clock's first price.
        decrement: how much the clock falls per tick (> 0).
        tick: seconds per step (> 0).
        reserve: the clock's floor; the item is never sold below it.
        opens_at: the time of step 0.
        item: the item on sale.
        budgets: bidder -> largest price it may pay.
    """

    def __init__(
        self,
        *,
        start_price: float,
        decrement: float,
        tick: float = 1.0,
        reserve: float = 0.0,
        opens_at: float = 0.0,
        item: str = LOT,
        budgets: Mapping[str, float] | None = None,
    ) -> None:
        if not decrement > 0 or not tick > 0:
            raise MarketError("decrement and tick must be positive")
        if reserve > start_price:
            raise MarketError(f"reserve {reserve} is above the start price {start_price}")
        self.start_price = start_price
        self.decrement = decrement
        self.tick = tick
        self.reserve = reserve
        self.opens_at = opens_at
        self.item = item
        self.budgets = dict(budgets or {})
        # The step at which the clock reaches the reserve (and stays one tick).
        self.last_step = max(0, math.ceil((start_price - reserve) / decrement - _GRID_SLACK))
        self._award: Award | None = None
        self._last_now = float("-inf")
        self.rejected: list[Rejection] = []

    @property
    def closes_at(self) -> float:
        """The time after which an unsold item stays unsold."""
        return self.opens_at + (self.last_step + 1) * self.tick

    def step(self, now: float) -> int:
        return math.floor((now - self.opens_at) / self.tick)

    def price_at_step(self, k: int) -> float:
        return max(self.reserve, self.start_price - k * self.decrement)

    def price(self, now: float) -> float | None:
        """The clock price at ``now``; ``None`` before opening, after closing or once sold."""
        k = self.step(now)
        if self._award is not None or k < 0 or k > self.last_step:
            return None
        return self.price_at_step(k)

    def claim(self, bidder: str, now: float) -> Award:
        """Claim the item at the current clock price.

        Raises:
            InvalidBidError: sold already, clock not running, or over budget.
            TimeOrderError: ``now`` is earlier than a previous call's.
        """
        if now < self._last_now:
            raise TimeOrderError(f"time went backwards: {now} after {self._last_now}")
        self._last_now = now
        k = self.step(now)
        price = self.price_at_step(max(k, 0))
        bid = Bid(bidder, price, self.item)
        rejection: Rejection | None
        if self._award is not None:
            rejection = Rejection(bid, SOLD, f"already sold to {self._award.bidder!r}")
        elif k < 0 or k > self.last_step:
            rejection = Rejection(bid, CLOSED, f"the clock runs from {self.opens_at} until {self.closes_at}")
        else:
            rejection = check(bid, items=(self.item,), budgets=self.budgets)
        if rejection is not None:
            self.rejected.append(rejection)
            raise InvalidBidError(rejection)
        self._award = Award(bidder, bid.items, price, price)
        return self._award

    def close(self) -> Outcome:
        """The outcome so far: the award if someone claimed, else unsold."""
        awards = () if self._award is None else (self._award,)
        return Outcome("dutch", awards, tuple(self.rejected))

    def first_step_at_or_below(self, limit: float) -> int | None:
        """The first step whose price is ``<= limit``; ``None`` if the clock never gets there."""
        if limit < self.reserve:
            return None
        if limit >= self.start_price:
            return 0
        k = max(0, math.ceil((self.start_price - limit) / self.decrement - _GRID_SLACK))
        return min(k, self.last_step)


def run_clock(auction: DutchAuction, plans: Iterable[tuple[str, float]]) -> Outcome:
    """Run the clock for bidders who each claim once the price reaches their plan.

    Args:
        auction: a fresh auction.
        plans: ``(bidder, highest price it will claim at)`` in tie-break order.

    Returns:
        The auction's outcome; a plan above the bidder's budget is rejected
        and the clock goes on for the others.
    """
    claims = []
    for order, (bidder, limit) in enumerate(plans):
        k = auction.first_step_at_or_below(limit)
        if k is not None:
            claims.append((k, order, bidder))
    for k, _, bidder in sorted(claims):
        try:
            auction.claim(bidder, auction.opens_at + k * auction.tick)
            break
        except InvalidBidError:
            continue  # over budget: recorded in auction.rejected; the next claimer tries
    return auction.close()
