"""The per-instance message log: what each member said in each round.

Storage is keyed by sender, so a member counts at most once in any tally; a
second, different message of the same kind and round from the same member is
equivocation and is refused (the first one stays). Round rules:

* proposals and prevotes of a round below ours are stale (nothing in the
  protocol reads them any more: a re-proposal carries its own prevote proof);
* precommits of any earlier round are kept, since a quorum of them still
  decides;
* nothing more than ``max_round_ahead`` rounds ahead is stored, bounding the
  memory a Byzantine member can make us spend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from protocols.bft.auth import EQUIVOCATION, FUTURE_ROUND, NOT_PROPOSER, STALE_ROUND
from protocols.bft.messages import PRECOMMIT, PREVOTE, PROPOSAL, Message
from protocols.bft.quorum import proposer


class VoteLog:
    """Accepted proposals and votes of one instance, by round and sender."""

    def __init__(self, members: Sequence[str], group: str, instance: str, max_round_ahead: int = 64) -> None:
        self._members = sorted(members)
        self._group = group
        self._instance = instance
        self._max_ahead = max_round_ahead
        self.proposals: dict[int, Message] = {}
        self.prevotes: dict[int, dict[str, Message]] = {}
        self.precommits: dict[int, dict[str, Message]] = {}
        self.values: dict[str, Any] = {}  # digest -> value, from proposers' proposals
        self._value_rounds: set[int] = set()
        self.senders: dict[int, set[str]] = {}  # round -> members heard from in it
        self.dirty_precommit_rounds: set[int] = set()

    def proposer(self, round_: int) -> str:
        return proposer(self._members, self._group, self._instance, round_)

    def add(self, msg: Message, current_round: int) -> str | None:
        """Store an authenticated message; the rejection reason, or ``None`` if stored."""
        if msg.round > current_round + self._max_ahead:
            return FUTURE_ROUND
        if msg.kind == PROPOSAL and msg.sender == self.proposer(msg.round) and msg.round not in self._value_rounds:
            # The digest was checked against the value, so even from a stale
            # round this is *the* value of that digest, and knowing it may let
            # a quorum of precommits already held decide. One value per round
            # bounds what an equivocating proposer can make us store.
            self._value_rounds.add(msg.round)
            self.values.setdefault(msg.digest, msg.value)
            self.dirty_precommit_rounds.update(self.precommits)
        if msg.round < current_round and msg.kind in (PROPOSAL, PREVOTE):
            return STALE_ROUND
        if msg.kind == PROPOSAL:
            if msg.sender != self.proposer(msg.round):
                return NOT_PROPOSER
            if msg.round in self.proposals:
                return EQUIVOCATION
            self.proposals[msg.round] = msg
        else:
            book = (self.prevotes if msg.kind == PREVOTE else self.precommits).setdefault(msg.round, {})
            if msg.sender in book:
                return EQUIVOCATION
            book[msg.sender] = msg
            if msg.kind == PRECOMMIT:
                self.dirty_precommit_rounds.add(msg.round)
        self.senders.setdefault(msg.round, set()).add(msg.sender)
        return None

    def voters(self, kind: str, round_: int, digest: str | None) -> list[Message]:
        """The votes of ``kind`` in ``round_`` for ``digest`` (``None``: nil), sorted by sender."""
        book = (self.prevotes if kind == PREVOTE else self.precommits).get(round_, {})
        return [book[s] for s in sorted(book) if book[s].digest == digest]

    def count(self, kind: str, round_: int) -> int:
        """How many members sent a vote of ``kind`` in ``round_``, whatever for."""
        return len((self.prevotes if kind == PREVOTE else self.precommits).get(round_, {}))

    def prune(self, below: int) -> None:
        """Forget proposals and prevotes of rounds below ``below`` (they are stale now)."""
        for book in (self.proposals, self.prevotes):
            for r in [r for r in book if r < below]:
                del book[r]
        for r in [r for r in self.senders if r < below]:
            del self.senders[r]
