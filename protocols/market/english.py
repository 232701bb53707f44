"""English (open ascending) auction of one item, with a soft close.

Rule:

* The auction is open from its creation until ``ends_at``; time is whatever
  the caller passes as ``now`` (monotonic seconds), never the wall clock.
* The first accepted bid must be at least the reserve. Every later bid must
  be at least the standing high bid plus ``min_increment`` (> 0), so two
  accepted bids never tie. The leader may raise its own bid.
* Soft close: a bid accepted less than ``soft_close`` seconds before
  ``ends_at`` moves ``ends_at`` to ``now + extension``. The end only ever
  moves later. Because each accepted bid raises the price by at least the
  increment and budgets are finite, extensions cannot go on forever.
* A bid at or after ``ends_at`` is rejected as ``closed``; invalid bids
  (see :mod:`protocols.market.bids`) and bids below the reserve or the
  increment are rejected with their reason and do not change the auction.
* At close the leader wins and pays its own (highest) bid; with no accepted
  bid the item stays unsold.

With bidders who raise by the increment while the price is below their value
("straightforward" bidding), the highest-value bidder wins at a price within
one increment above the second-highest value — the Vickrey price, which is
why English and Vickrey revenue agree (test_revenue.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from protocols.market.bids import (
    BELOW_INCREMENT,
    BELOW_RESERVE,
    CLOSED,
    LOT,
    Award,
    Bid,
    Outcome,
    Rejection,
    check,
)
from protocols.market.errors import AuctionOpenError, InvalidBidError, MarketError, TimeOrderError


class EnglishAuction:
    """An open ascending auction driven by injected times.

    Args:
        ends_at: the initial end time (same clock as the ``now`` arguments).
        min_increment: the least raise over the standing bid; must be > 0.
        item: the item on sale.
        reserve: the least opening bid.
        soft_close: a bid this many seconds or less before the end extends it.
        extension: seconds the end moves past a late bid (default: ``soft_close``).
        budgets: bidder -> largest amount it may bid.
    """

    def __init__(
        self,
        *,
        ends_at: float,
        min_increment: float,
        item: str = LOT,
        reserve: float = 0.0,
        soft_close: float = 0.0,
        extension: float | None = None,
        budgets: Mapping[str, float] | None = None,
    ) -> None:
        if not min_increment > 0:
            raise MarketError(f"min_increment must be positive, got {min_increment}")
        if soft_close < 0 or (extension is not None and extension < 0):
            raise MarketError("soft_close and extension must not be negative")
        self.item = item
        self.reserve = reserve
        self.min_increment = min_increment
        self.soft_close = soft_close
        self.extension = soft_close if extension is None else extension
        self.budgets = dict(budgets or {})
        self._ends_at = ends_at
        self._last_now = float("-inf")
        self.accepted: list[tuple[float, Bid]] = []
        self.rejected: list[Rejection] = []

    @property
    def ends_at(self) -> float:
        """The current end time, after any soft-close extension."""
        return self._ends_at

    @property
    def leader(self) -> Bid | None:
        return self.accepted[-1][1] if self.accepted else None

    def is_open(self, now: float) -> bool:
        return now < self._ends_at

    def minimum_bid(self) -> float:
        """The least amount the next bid must reach to be accepted."""
        lead = self.leader
        return self.reserve if lead is None else lead.amount + self.min_increment

    def bid(self, bid: Bid, now: float) -> None:
        """Place a bid at time ``now``.

        Raises:
            InvalidBidError: the bid is invalid, too low, or the auction is closed
                (``reason`` says which); the auction is unchanged.
            TimeOrderError: ``now`` is earlier than a previous call's.
        """
        self._tick(now)
        rejection = check(bid, items=(self.item,), budgets=self.budgets)
        if rejection is None and not self.is_open(now):
            rejection = Rejection(bid, CLOSED, f"the auction ended at {self._ends_at}")
        if rejection is None and bid.amount < self.minimum_bid():
            code = BELOW_RESERVE if self.leader is None else BELOW_INCREMENT
            rejection = Rejection(bid, code, f"amount {bid.amount} is below the minimum of {self.minimum_bid()}")
        if rejection is not None:
            self.rejected.append(rejection)
            raise InvalidBidError(rejection)
        self.accepted.append((now, bid))
        if self._ends_at - now < self.soft_close:
            self._ends_at = max(self._ends_at, now + self.extension)

    def close(self, now: float) -> Outcome:
        """The outcome, once the auction has ended.

        Raises:
            AuctionOpenError: ``now`` is before the (extended) end.
            TimeOrderError: ``now`` is earlier than a previous call's.
        """
        self._tick(now)
        if self.is_open(now):
            raise AuctionOpenError(f"the auction runs until {self._ends_at}; close it at or after that time")
        lead = self.leader
        awards = () if lead is None else (Award(lead.bidder, lead.items, lead.amount, lead.amount),)
        return Outcome("english", awards, tuple(self.rejected))

    def _tick(self, now: float) -> None:
        if now < self._last_now:
            raise TimeOrderError(f"time went backwards: {now} after {self._last_now}")
        self._last_now = now
