"""Bids, awards and outcomes shared by every auction; how invalid bids are rejected.

Validity, checked before any mechanism ranks a bid (the reason codes)::

    not-finite        the amount is NaN or infinite
    negative          the amount is below zero
    over-budget       the amount is above the bidder's budget (when it has one)
    empty-bundle      the bid names no item
    unknown-item      the bid names an item that is not on sale
    duplicate-bidder  a sealed-bid mechanism already holds a bid of this bidder
                      (the first one counts, later ones are rejected)

Open auctions add their own codes (``below-reserve``, ``below-increment``,
``closed``, ``sold``). A rejected bid never takes part in ranking or pricing;
sealed-bid mechanisms return the rejections in ``Outcome.rejected`` and open
auctions raise :class:`~protocols.market.errors.InvalidBidError` carrying the
same record.

Tie-break (every mechanism): among equal amounts — or equal ranking keys —
the bid submitted first wins. Submission order is the order of the input
sequence for sealed bids and the order of calls for open auctions; it is
fixed by the caller, so outcomes are deterministic and reproducible.

Amounts are floats; equal amounts are compared exactly, so mechanisms that sum
amounts (combinatorial) document their tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

LOT = "lot"
"""Item name of a single-item auction when the caller gives none."""

NOT_FINITE = "not-finite"
NEGATIVE = "negative"
OVER_BUDGET = "over-budget"
EMPTY_BUNDLE = "empty-bundle"
UNKNOWN_ITEM = "unknown-item"
DUPLICATE_BIDDER = "duplicate-bidder"
BELOW_RESERVE = "below-reserve"
BELOW_INCREMENT = "below-increment"
CLOSED = "closed"
SOLD = "sold"


@dataclass(frozen=True, slots=True)
class Bid:
    """One bid: ``amount`` offered by ``bidder`` for the bundle ``items``.

    ``items`` may be given as one item name or any iterable of names; it is
    stored as a frozenset. Single-item auctions use the default bundle
    ``{LOT}``.
    """

    bidder: str
    amount: float
    items: frozenset[str] = field(default=frozenset({LOT}))

    def __post_init__(self) -> None:
        if isinstance(self.items, str):
            object.__setattr__(self, "items", frozenset({self.items}))
        elif not isinstance(self.items, frozenset):
            object.__setattr__(self, "items", frozenset(self.items))


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a bid was turned away: ``reason`` is one of the codes above."""

    bid: Bid
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Award:
    """What a winner gets and pays.

    Attributes:
        bidder: the winner.
        items: the bundle awarded.
        bid: the amount it bid for that bundle.
        payment: what it pays (per click for GSP).
        slot: 1-based slot for position auctions, ``None`` otherwise.
    """

    bidder: str
    items: frozenset[str]
    bid: float
    payment: float
    slot: int | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one auction: awards in rank order, rejected bids, mechanism name."""

    mechanism: str
    awards: tuple[Award, ...]
    rejected: tuple[Rejection, ...] = ()

    @property
    def revenue(self) -> float:
        return sum(a.payment for a in self.awards)

    @property
    def winner(self) -> str | None:
        """The single winner of a single-item auction, or ``None`` when unsold."""
        return self.awards[0].bidder if self.awards else None

    def award_of(self, bidder: str) -> Award | None:
        return next((a for a in self.awards if a.bidder == bidder), None)

    def utility(self, bidder: str, value: float) -> float:
        """Quasi-linear utility of ``bidder`` whose value for what it won is ``value``."""
        award = self.award_of(bidder)
        return 0.0 if award is None else value - award.payment


def check(bid: Bid, *, items: Iterable[str], budgets: Mapping[str, float] | None = None) -> Rejection | None:
    """The rejection of one bid, or ``None`` when it is valid.

    Args:
        bid: the bid to check.
        items: the items on sale.
        budgets: bidder -> largest amount it may bid; bidders absent have no limit.
    """
    amount = bid.amount
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount):
        return Rejection(bid, NOT_FINITE, f"amount {amount!r} is not a finite number")
    if amount < 0:
        return Rejection(bid, NEGATIVE, f"amount {amount} is below zero")
    if budgets is not None and bid.bidder in budgets and amount > budgets[bid.bidder]:
        return Rejection(bid, OVER_BUDGET, f"amount {amount} is over the budget of {budgets[bid.bidder]}")
    if not bid.items:
        return Rejection(bid, EMPTY_BUNDLE, "the bid names no item")
    on_sale = items if isinstance(items, (set, frozenset)) else set(items)
    unknown = bid.items - on_sale
    if unknown:
        return Rejection(bid, UNKNOWN_ITEM, f"not on sale: {', '.join(sorted(unknown))}")
    return None


def screen(
    bids: Iterable[Bid],
    *,
    items: Iterable[str],
    budgets: Mapping[str, float] | None = None,
) -> tuple[list[tuple[int, Bid]], list[Rejection]]:
    """Split sealed bids into valid ones (with their submission index) and rejections.

    One bid per bidder: the first valid bid of a bidder counts, later ones are
    rejected as ``duplicate-bidder``.
    """
    on_sale = frozenset(items)
    valid: list[tuple[int, Bid]] = []
    rejected: list[Rejection] = []
    seen: set[str] = set()
    for index, bid in enumerate(bids):
        rejection = check(bid, items=on_sale, budgets=budgets)
        if rejection is None and bid.bidder in seen:
            rejection = Rejection(bid, DUPLICATE_BIDDER, "one sealed bid per bidder; the first one counts")
        if rejection is not None:
            rejected.append(rejection)
            continue
        seen.add(bid.bidder)
        valid.append((index, bid))
    return valid, rejected


def ranked(valid: Sequence[tuple[int, Bid]]) -> list[tuple[int, Bid]]:
    """Valid bids, highest amount first, earlier submission first among equals."""
    return sorted(valid, key=lambda ib: (-ib[1].amount, ib[0]))
