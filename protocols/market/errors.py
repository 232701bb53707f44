"""Errors of the market protocols, named by condition, under ``ProtocolError``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from config.errors import ProtocolError

if TYPE_CHECKING:
    from protocols.market.bids import Rejection
    from protocols.market.messages import Conversation


class MarketError(ProtocolError):
    """An auction, reputation system or Contract Net round could not do what it was asked."""


class InvalidBidError(MarketError):
    """A bid was rejected; ``rejection`` says which bid and why (``rejection.reason`` is a code).

    Attributes:
        rejection: the rejection record (bid, reason code, detail).
    """

    def __init__(self, rejection: Rejection) -> None:
        self.rejection = rejection
        super().__init__(f"bid by {rejection.bid.bidder!r} rejected ({rejection.reason}): {rejection.detail}")

    @property
    def reason(self) -> str:
        return self.rejection.reason


class TimeOrderError(MarketError):
    """An injected ``now`` went backwards; pass monotonic times (e.g. ``loop.time()``)."""


class AuctionOpenError(MarketError):
    """The auction cannot be closed yet: its (possibly extended) end time has not passed."""


class SearchLimitError(MarketError):
    """Exact winner determination gave up after its node limit; use the greedy mechanism."""


class ContractNetError(MarketError):
    """A Contract Net run ended without a result.

    Attributes:
        task_id: the task that was offered.
        conversations: every round of the run, as recorded by the initiator.
    """

    def __init__(self, message: str, task_id: str = "", conversations: tuple[Conversation, ...] = ()) -> None:
        self.task_id = task_id
        self.conversations = conversations
        super().__init__(message)


class NoParticipantsError(ContractNetError):
    """Nobody could be asked: the participant list or finder returned no eligible agent."""


class NoProposalsError(ContractNetError):
    """Every asked participant refused or stayed silent until the reply-by deadline."""


class AwardFailedError(ContractNetError):
    """Every round's winner failed or went silent, and the round limit was reached."""
