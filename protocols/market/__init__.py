"""Market coordination: auctions with exact rules, reputation, and FIPA Contract Net.

Auctions (pure functions and state machines; time is injected, nothing does I/O):

* :func:`first_price`, :func:`vickrey` — sealed-bid, one item, with reserve.
* :class:`EnglishAuction` — ascending, minimum increment, soft close.
* :class:`DutchAuction`, :func:`run_clock` — descending clock with reserve.
* :func:`gsp` — generalized second price for ``k`` slots.
* :func:`vcg` (exact branch-and-bound allocation, :func:`solve_exact`),
  :func:`lehmann_greedy` (LOS, critical values), and
  :func:`combinatorial_auction`, which picks one of them by size.

Every mechanism rejects invalid bids with a reason (:class:`Rejection`,
:class:`InvalidBidError`) and breaks ties toward the earliest bid.

Reputation: :class:`BetaReputation` (forgetting, whitewashing-neutral prior),
:class:`EigenTrust` (pre-trusted agents, collusion-resistant). Reputation
enters Contract Net through a scorer (:func:`reputation_weighted`).

Contract Net: :class:`ContractNetInitiator` offers a task and returns the
winner's result (:class:`ContractResult`), re-offering when the winner fails
or goes silent; :class:`ContractNetParticipant` bids and performs. The
conversation record (:class:`Conversation`) is checked by
:func:`violations` / :func:`run_violations`.
"""

from protocols.market import messages
from protocols.market.beta import BetaReputation
from protocols.market.bids import LOT, Award, Bid, Outcome, Rejection, check, screen
from protocols.market.combinatorial import combinatorial_auction
from protocols.market.dutch import DutchAuction, run_clock
from protocols.market.eigentrust import EigenTrust
from protocols.market.english import EnglishAuction
from protocols.market.errors import (
    AuctionOpenError,
    AwardFailedError,
    ContractNetError,
    InvalidBidError,
    MarketError,
    NoParticipantsError,
    NoProposalsError,
    SearchLimitError,
    TimeOrderError,
)
from protocols.market.first_price import first_price
from protocols.market.greedy import lehmann_greedy
from protocols.market.gsp import gsp
from protocols.market.initiator import ContractNetInitiator, ContractResult, Finder
from protocols.market.invariants import run_violations, violations
from protocols.market.messages import CallForProposals, Conversation, Proposal, Record
from protocols.market.participant import ContractNetParticipant
from protocols.market.scoring import Scorer, load_price, lowest_price, reputation_weighted
from protocols.market.vcg import vcg
from protocols.market.vickrey import vickrey
from protocols.market.wdp import Allocation, solve_exact

__all__ = [
    "LOT", "Allocation", "AuctionOpenError", "Award", "AwardFailedError", "BetaReputation", "Bid",
    "CallForProposals", "ContractNetError", "ContractNetInitiator", "ContractNetParticipant", "ContractResult",
    "Conversation", "DutchAuction", "EigenTrust", "EnglishAuction", "Finder", "InvalidBidError", "MarketError",
    "NoParticipantsError", "NoProposalsError", "Outcome", "Proposal", "Record", "Rejection", "Scorer",
    "SearchLimitError", "TimeOrderError", "check", "combinatorial_auction", "first_price", "gsp",
    "lehmann_greedy", "load_price", "lowest_price", "messages", "reputation_weighted", "run_clock",
    "run_violations", "screen", "solve_exact", "vcg", "vickrey", "violations",
]
