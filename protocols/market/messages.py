"""Contract Net on the wire: performatives, subjects, headers, and the conversation record.

Subjects (``group`` is the set of agents that may bid, e.g. a pool or a capability)::

    coord.cnp.<group>.<conversation>.cfp     initiator -> every participant of the group
    coord.cnp.<group>.<conversation>.reply.<sender>   participants -> initiator
    <participant inbox>                      initiator -> one participant

Every message carries the headers ``Foundation-Performative``,
``Foundation-Conversation-Id``, ``Foundation-Sender`` and
``Foundation-Reply-To`` (where answers go); the body is JSON. Bodies::

    cfp              {v: 1, task_id, task, to: [agent…], round, reply_by (epoch s), reply_within (s)}
    propose          {price, …extra fields for the scorer}
    refuse           {reason}
    accept-proposal  {task_id, progress_every (s)}
    reject-proposal  {reason: outbid | late | invalid | not-addressed}
    inform-progress  {}                      the accepted participant is still working
    inform-done      {}
    inform-result    {result}
    failure          {reason}
    cancel           {reason}                the initiator gave up on the accepted participant

Unknown body fields are ignored, so either side may add some.

An answer counts for the participant its subject names (:func:`answer_subject`),
and one whose ``Foundation-Sender`` header names anyone else is ignored: with
``[auth]`` a worker may publish only on ``….reply.<its own agent id>``
(broker.permissions), so the server stops a bid in another agent's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from broker import NATS_ERRORS, Connection, codec, reply_allowed, subjects
from config.errors import BrokerError
from protocols.market.errors import ContractNetError

PROTOCOL = "cnp"
VERSION = 1
"""Sent as ``v`` in every cfp; participants ignore cfps of a revision they do not speak."""

CFP = "cfp"
PROPOSE = "propose"
REFUSE = "refuse"
ACCEPT = "accept-proposal"
REJECT = "reject-proposal"
PROGRESS = "inform-progress"
INFORM_DONE = "inform-done"
INFORM_RESULT = "inform-result"
FAILURE = "failure"
CANCEL = "cancel"
ENDINGS = frozenset({INFORM_DONE, INFORM_RESULT, FAILURE})

H_PERFORMATIVE = "Foundation-Performative"
H_CONVERSATION = "Foundation-Conversation-Id"
H_SENDER = "Foundation-Sender"
H_REPLY_TO = subjects.REPLY_TO

# Why an initiator rejected a proposal.
OUTBID = "outbid"
LATE = "late"
INVALID = "invalid"
NOT_ADDRESSED = "not-addressed"

# How a round ended (Conversation.outcome).
DONE = "done"
RESULT = "result"
FAILED = "failure"
TIMEOUT = "timeout"
NO_PROPOSALS = "no-proposals"


def cfp_subject(group: str, conversation_id: str) -> str:
    return subjects.coord(PROTOCOL, group, conversation_id, "cfp")


def cfp_wildcard(group: str) -> str:
    """What a participant of ``group`` subscribes to."""
    return f"coord.{PROTOCOL}.{subjects.token(group, 'group')}.*.cfp"


def reply_subject(group: str, conversation_id: str) -> str:
    return subjects.coord(PROTOCOL, group, conversation_id, "reply")


def answer_subject(reply_to: str, sender: str) -> str:
    """Where ``sender`` answers a conversation whose reply subject is ``reply_to``: its own subject under it.

    Raises:
        ContractNetError: the sender id cannot name a subject.
    """
    try:
        return ".".join([reply_to, *(subjects.token(t, "agent id") for t in sender.split("."))])
    except BrokerError as exc:
        raise ContractNetError(f"agent id {sender!r} cannot answer a call for proposals: {exc}") from exc


def sender_of(subject: str, reply_to: str) -> str:
    """The sender an answer's subject names (empty if it is not under ``reply_to``)."""
    return subject[len(reply_to) + 1:] if subject.startswith(reply_to + ".") else ""


def answer_to_ok(reply_to: str, group: str, conversation_id: str) -> bool:
    """A participant answers only the conversation's own reply subject or an inbox
    (DESIGN.md §10): a ``Foundation-Reply-To`` naming anything else is refused and logged."""
    try:
        if reply_to == reply_subject(group, conversation_id):
            return True
    except BrokerError:  # a conversation id that is no subject token
        pass
    return reply_allowed(reply_to, f"{PROTOCOL} conversation {conversation_id[:64]!r}")


@dataclass(frozen=True, slots=True)
class Record:
    """One message as the recorder saw it.

    Attributes:
        at: seconds since the round started (initiator) or the participant's loop time.
        direction: ``"out"`` (sent) or ``"in"`` (received).
        performative: the performative.
        peer: the other party (``"*"`` for the cfp broadcast).
        body: the decoded body.
        note: ``"late"``, ``"duplicate"``, ``"unexpected"``, ``"timeout"`` … or ``""``.
    """

    at: float
    direction: str
    performative: str
    peer: str
    body: Any
    note: str = ""


@dataclass(slots=True)
class Conversation:
    """One Contract Net round, recorded by its initiator.

    Attributes:
        conversation_id: the id in every message's header.
        task_id: the task offered.
        round: 1 for the first offer, 2 for the first re-offer, …
        addressed: the participants the cfp named.
        deadline: the reply-by deadline, in seconds since the round started.
        records: every message sent and received, in order.
        outcome: ``done``/``result``/``failure``/``timeout``/``no-proposals`` once ended.
        winner: the accepted participant, if any.
    """

    conversation_id: str
    task_id: str
    round: int
    addressed: tuple[str, ...]
    deadline: float
    records: list[Record] = field(default_factory=list)
    outcome: str = ""
    winner: str | None = None

    def sent(self, performative: str) -> list[Record]:
        return [r for r in self.records if r.direction == "out" and r.performative == performative]

    def received(self, performative: str) -> list[Record]:
        return [r for r in self.records if r.direction == "in" and r.performative == performative]


@dataclass(frozen=True, slots=True)
class Proposal:
    """An on-time proposal as the initiator's scorer sees it."""

    sender: str
    price: float
    body: dict[str, Any]
    received_at: float


@dataclass(frozen=True, slots=True)
class CallForProposals:
    """A cfp as a participant's bid and perform functions see it."""

    conversation_id: str
    task_id: str
    task: Any
    initiator: str
    round: int
    reply_by: float
    reply_within: float


async def send(
    nc: Connection,
    subject: str,
    performative: str,
    *,
    conversation_id: str,
    sender: str,
    reply_to: str,
    body: Any,
) -> None:
    """Publish one Contract Net message.

    Raises:
        ContractNetError: the connection is closed or the publish failed.
    """
    headers = {
        H_PERFORMATIVE: performative,
        H_CONVERSATION: conversation_id,
        H_SENDER: sender,
        H_REPLY_TO: reply_to,
    }
    try:
        await nc.publish(subject, codec.encode(body), headers=headers)
    except NATS_ERRORS as exc:
        raise ContractNetError(f"cannot send {performative} on {subject}: {exc}; check the NATS connection") from exc


def parse(msg: Any) -> tuple[str, str, str, str, Any] | None:
    """``(performative, conversation_id, sender, reply_to, body)`` of a message, or ``None`` if malformed."""
    headers = msg.headers or {}
    performative = headers.get(H_PERFORMATIVE)
    conversation_id = headers.get(H_CONVERSATION)
    sender = headers.get(H_SENDER)
    if not performative or not conversation_id or not sender:
        return None
    try:
        body = codec.decode(msg.data) if msg.data else {}
    except codec.CodecError:
        return None
    return performative, conversation_id, sender, headers.get(H_REPLY_TO, ""), body
