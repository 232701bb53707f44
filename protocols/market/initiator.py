"""The Contract Net initiator: offer one task, award it, and see it through.

Message sequence of one round (subjects and bodies in :mod:`.messages`)::

    initiator -> group         cfp {task, to, reply_by}
    participant -> initiator   propose {price} | refuse {reason}       until reply-by
    initiator -> proposer      accept-proposal (the best score) | reject-proposal (everyone else)
    winner -> initiator        inform-progress …                         while working
    winner -> initiator        inform-done | inform-result | failure
    initiator -> winner        cancel                                    only after silence_timeout

A run is up to ``max_rounds`` rounds, each a new conversation id. A round
whose winner fails or stays silent for ``silence_timeout`` seconds is
followed by a re-offer to the remaining participants (the failed one
excluded). The run returns the first result.

Invariants (checked on the recorded conversations by :mod:`.invariants`):

1. Each round sends exactly one cfp.
2. Every proposer — on time or late — receives exactly one accept-proposal or
   reject-proposal; refusers receive neither.
3. A proposal received at or after the reply-by deadline is never accepted
   (it is rejected as ``late`` at once).
4. At most one proposal per round is accepted, and only an on-time one.
5. The accepted participant's round ends with exactly one of inform-done,
   inform-result or failure — or, after silence, a cancel and a re-offer
   that excludes it.

Deadlines are measured on the initiator's event-loop clock; the ``reply_by``
sent in the cfp (epoch seconds) and ``reply_within`` only inform
participants. Bidding closes early once every addressed participant answered.

Bounded per conversation: at most :data:`MAX_RECORDS` records, and at most
:data:`MAX_STRANGERS` unaddressed senders are remembered and rejected (so
invariant 2 holds for those); answers from further unaddressed senders are
dropped unanswered, so a flood cannot grow memory or be amplified.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from broker import NATS_ERRORS, Connection, reply_allowed
from protocols.market import messages as m
from protocols.market.errors import AwardFailedError, ContractNetError, NoParticipantsError, NoProposalsError
from protocols.market.scoring import Scorer, lowest_price
from protocols.metrics import cleared, timed_round

log = logging.getLogger("foundation.protocols.market")

Finder = Callable[[], Awaitable[Sequence[str]] | Sequence[str]]
"""Returns the ids of the agents to ask (e.g. the registry's capable, live agents)."""


@dataclass(frozen=True, slots=True)
class ContractResult:
    """A task completed through Contract Net.

    Attributes:
        task_id: the task.
        winner: the participant that completed it.
        price: its accepted proposal's price.
        performative: ``inform-done`` or ``inform-result``.
        result: the ``result`` of an inform-result, ``None`` for inform-done.
        conversations: every round of the run, failed ones first.
    """

    task_id: str
    winner: str
    price: float
    performative: str
    result: Any
    conversations: tuple[m.Conversation, ...]


class ContractNetInitiator:
    """Offers tasks to a group of participants over one NATS connection.

    Args:
        nc: a connected NATS client.
        group: the group whose participants receive the cfp.
        participants: agent ids to ask, or a finder (sync or async) called each round.
        name: this initiator's id in the ``Foundation-Sender`` header.
        scorer: proposal -> score, higher wins (default: lowest price).
        reply_within: seconds from cfp to the reply-by deadline.
        silence_timeout: seconds the accepted participant may stay silent.
        max_rounds: offers per task (the first plus re-offers).
        on_outcome: called ``(agent, succeeded)`` when a winner ends its round,
            e.g. to feed a reputation system.
    """

    def __init__(
        self,
        nc: Connection,
        group: str,
        *,
        participants: Sequence[str] | Finder,
        name: str | None = None,
        scorer: Scorer = lowest_price,
        reply_within: float = 0.5,
        silence_timeout: float = 10.0,
        max_rounds: int = 3,
        on_outcome: Callable[[str, bool], None] | None = None,
    ) -> None:
        if reply_within <= 0 or silence_timeout <= 0 or max_rounds < 1:
            raise ContractNetError("reply_within and silence_timeout must be positive and max_rounds at least 1")
        m.cfp_wildcard(group)  # validates the group as a subject token
        self.nc = nc
        self.group = group
        self.name = name or f"initiator-{uuid.uuid4().hex[:12]}"
        self.scorer = scorer
        self.reply_within = reply_within
        self.silence_timeout = silence_timeout
        self.max_rounds = max_rounds
        self.on_outcome = on_outcome
        self._participants = participants

    @timed_round("contract_net", "awarded")
    @cleared("contract_net")
    async def run(self, task: Any, *, task_id: str | None = None) -> ContractResult:
        """Offer ``task`` until a participant completes it.

        Args:
            task: the task body (JSON-serializable); participants see it in the cfp.
            task_id: the task's id (default: a fresh one).

        Returns:
            The winner's result and the recorded conversations.

        Raises:
            NoParticipantsError: nobody (left) to ask.
            NoProposalsError: everyone asked refused or stayed silent.
            AwardFailedError: every round's winner failed or went silent.
            ContractNetError: NATS failed while sending.
        """
        task_id = task_id or uuid.uuid4().hex
        excluded: set[str] = set()
        rounds: list[m.Conversation] = []
        for number in range(1, self.max_rounds + 1):
            addressed = [p for p in dict.fromkeys(await self._find()) if p not in excluded]
            if not addressed:
                why = "no participants to ask" if number == 1 else "every participant already failed this task"
                raise NoParticipantsError(f"task {task_id}: {why}", task_id, tuple(rounds))
            offer = _Round(self, task, task_id, number, addressed)
            conv = await offer.run()
            rounds.append(conv)
            if conv.outcome == m.NO_PROPOSALS:
                raise NoProposalsError(
                    f"task {task_id}: no proposal from {len(addressed)} participant(s) by the reply-by deadline",
                    task_id,
                    tuple(rounds),
                )
            assert conv.winner is not None
            succeeded = conv.outcome in (m.DONE, m.RESULT)
            if self.on_outcome is not None:
                self.on_outcome(conv.winner, succeeded)
            if succeeded and offer.ending is not None:
                performative, body = offer.ending
                result = body.get("result") if isinstance(body, dict) else None
                return ContractResult(task_id, conv.winner, offer.price, performative, result, tuple(rounds))
            excluded.add(conv.winner)
        raise AwardFailedError(
            f"task {task_id}: the winner of each of {self.max_rounds} round(s) failed or went silent",
            task_id,
            tuple(rounds),
        )

    async def _find(self) -> Sequence[str]:
        found = self._participants() if callable(self._participants) else self._participants
        if inspect.isawaitable(found):
            found = await found
        return list(found)


class _Round:
    """One conversation: cfp, bidding, award, and the winner's ending."""

    def __init__(self, owner: ContractNetInitiator, task: Any, task_id: str, number: int, addressed: list[str]) -> None:
        self.owner = owner
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        cid = uuid.uuid4().hex
        self.conv = m.Conversation(cid, task_id, number, tuple(addressed), owner.reply_within)
        self.task = task
        self.addressed = frozenset(addressed)
        self.reply_subject = m.reply_subject(owner.group, cid)
        self.closed = False
        self.first_answer: dict[str, str] = {}
        self.inboxes: dict[str, str] = {}
        self.proposals: dict[str, m.Proposal] = {}
        self.strangers = 0  # unaddressed senders remembered (at most MAX_STRANGERS)
        self.all_answered = asyncio.Event()
        self.winner: str | None = None
        self.price = 0.0
        self.heard = asyncio.Event()
        self.ending: tuple[str, Any] | None = None

    def now(self) -> float:
        return self.loop.time() - self.t0

    def record(self, direction: str, performative: str, peer: str, body: Any, note: str = "") -> None:
        if len(self.conv.records) < MAX_RECORDS:  # a flood of answers cannot grow the record without bound
            self.conv.records.append(m.Record(self.now(), direction, performative, peer, body, note))

    async def reply(self, peer: str, performative: str, body: dict[str, Any], note: str = "") -> None:
        self.record("out", performative, peer, body, note)
        await m.send(
            self.owner.nc,
            self.inboxes[peer],
            performative,
            conversation_id=self.conv.conversation_id,
            sender=self.owner.name,
            reply_to=self.reply_subject,
            body=body,
        )

    async def run(self) -> m.Conversation:
        owner = self.owner
        try:
            sub = await owner.nc.subscribe(f"{self.reply_subject}.>", cb=self.on_message)
        except NATS_ERRORS as exc:
            raise ContractNetError(f"cannot subscribe to {self.reply_subject}: {exc}") from exc
        try:
            body = {
                "v": m.VERSION,
                "task_id": self.conv.task_id,
                "task": self.task,
                "to": list(self.conv.addressed),
                "round": self.conv.round,
                "reply_by": time.time() + owner.reply_within,
                "reply_within": owner.reply_within,
            }
            self.record("out", m.CFP, "*", body)
            await m.send(
                owner.nc,
                m.cfp_subject(owner.group, self.conv.conversation_id),
                m.CFP,
                conversation_id=self.conv.conversation_id,
                sender=owner.name,
                reply_to=self.reply_subject,
                body=body,
            )
            await _wait(self.all_answered, self.conv.deadline - self.now())
            # From here on every proposal is late; nothing awaits before this line runs.
            self.closed = True
            await self.award()
            if self.winner is None:
                self.conv.outcome = m.NO_PROPOSALS
            else:
                await self.follow()
            return self.conv
        finally:
            try:
                await sub.unsubscribe()
            except NATS_ERRORS:
                pass  # connection already closed: the subscription is gone with it

    async def award(self) -> None:
        """Accept the best on-time proposal and reject all others."""
        scored = []
        for sender, proposal in self.proposals.items():
            try:
                score = float(self.owner.scorer(proposal))
            except Exception:  # a scorer bug must not leave a proposer without an answer
                log.exception("scorer failed on the proposal of %s", sender)
                score = math.nan
            scored.append((score, sender))
        valid = sorted((s for s in scored if not math.isnan(s[0])), key=lambda s: (-s[0], s[1]))
        if valid:
            self.winner = valid[0][1]
            self.conv.winner = self.winner
            self.price = self.proposals[self.winner].price
            await self.reply(
                self.winner,
                m.ACCEPT,
                {"task_id": self.conv.task_id, "progress_every": self.owner.silence_timeout / 3},
            )
        for score, sender in scored:
            if sender != self.winner:
                await self.reply(sender, m.REJECT, {"reason": m.INVALID if math.isnan(score) else m.OUTBID})

    async def follow(self) -> None:
        """Wait for the winner's ending, resetting the silence clock on each message from it."""
        while not self.conv.outcome:
            self.heard.clear()
            if not await _wait(self.heard, self.owner.silence_timeout):
                assert self.winner is not None
                # Set before awaiting the cancel: an ending arriving meanwhile is then "unexpected".
                self.conv.outcome = m.TIMEOUT
                reason = f"silent for {self.owner.silence_timeout}s"
                await self.reply(self.winner, m.CANCEL, {"reason": reason}, note="timeout")
                return

    async def on_message(self, msg: Any) -> None:
        parsed = m.parse(msg)
        if parsed is None:
            return
        performative, cid, sender, reply_to, body = parsed
        if cid != self.conv.conversation_id:
            return
        if sender != m.sender_of(msg.subject, self.reply_subject):
            # The subject says who sent it (the server enforces it with [auth]); the header is the sender's word.
            self.record("in", performative, sender, body, note="forged")
            return
        if performative in (m.PROPOSE, m.REFUSE):
            await self.on_answer(performative, sender, reply_to, body)
        elif sender == self.winner and not self.conv.outcome and performative in (m.PROGRESS, *m.ENDINGS):
            self.record("in", performative, sender, body)
            if performative != m.PROGRESS:
                self.ending = (performative, body)
                self.conv.outcome = {m.INFORM_DONE: m.DONE, m.INFORM_RESULT: m.RESULT}.get(performative, m.FAILED)
            self.heard.set()
        else:
            self.record("in", performative, sender, body, note="unexpected")

    async def on_answer(self, performative: str, sender: str, reply_to: str, body: Any) -> None:
        if performative == m.PROPOSE and not reply_allowed(reply_to, f"proposal of {sender[:64]!r}"):
            # Nowhere to send the accept or reject: not a proposal at all.
            self.record("in", performative, sender, body, note="malformed")
            return
        if sender in self.first_answer:
            self.record("in", performative, sender, body, note="duplicate")
            return
        if sender not in self.addressed:
            if self.strangers >= MAX_STRANGERS:
                return  # answers from ever more unaddressed senders: not remembered, not answered
            self.strangers += 1
        self.first_answer[sender] = performative
        late = self.closed or self.now() >= self.conv.deadline
        if performative == m.REFUSE:
            self.record("in", performative, sender, body, note="late" if late else "")
        else:
            self.inboxes[sender] = reply_to
            price = body.get("price") if isinstance(body, dict) else None
            if late:
                self.record("in", performative, sender, body, note="late")
                await self.reply(sender, m.REJECT, {"reason": m.LATE})
            elif sender not in self.addressed:
                self.record("in", performative, sender, body, note="not-addressed")
                await self.reply(sender, m.REJECT, {"reason": m.NOT_ADDRESSED})
            elif not _valid_price(price):
                self.record("in", performative, sender, body, note="invalid")
                await self.reply(sender, m.REJECT, {"reason": m.INVALID})
            else:
                self.record("in", performative, sender, body)
                self.proposals[sender] = m.Proposal(sender, float(price), body, self.now())
        if not late and self.addressed <= self.first_answer.keys():
            self.all_answered.set()


MAX_RECORDS = 10_000  # messages recorded per conversation
MAX_STRANGERS = 256  # unaddressed senders per conversation that are remembered and answered


def _valid_price(price: Any) -> bool:
    return isinstance(price, (int, float)) and not isinstance(price, bool) and math.isfinite(price) and price >= 0


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` up to ``timeout`` seconds; whether it was set."""
    if event.is_set():
        return True
    if timeout <= 0:
        return False
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True
