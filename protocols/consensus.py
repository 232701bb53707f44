"""Consensus: one proposal, a quorum of votes before a deadline, a stored decision.

Message sequence (``S(phase)`` = ``coord.consensus.<group>.<session>.<phase>``)::

    proposer  SUB  S(vote).>                          before publishing, so no vote is missed
    proposer  PUB  S(propose)                        {v, session, group, proposer, value, participants, timeout}
    voter     PUB  S(vote).<voter id>                {v, session, voter, vote: yes|no|abstain, reason}
    ...            (scatter-gather: every participant answers on its own subject)
    proposer  KV   consensus/<group>.<session>       the decision, written with create: once per session
    proposer  PUB  S(decision)                       the same decision, for live listeners

The round ends as soon as the outcome is certain (the yes weight meets the
quorum, or cannot meet it even if every silent participant said yes), or at
the deadline.

Rules (each checked by tests/protocols/test_consensus.py):

* The quorum is counted over *all* named participants, not over those who
  answered, so message loss or a crashed participant can only delay or deny a
  decision, never produce one a majority did not vote for.
* An abstention is an answer that supports neither side: it counts in the
  total and never as yes. It lets the round end early and is reported apart
  from silence (``unanswered``).
* Outcomes: ``accepted``; ``rejected`` (the yes side can no longer win);
  ``timeout`` (the deadline passed while the silent could still have tipped it).
* Only the first vote of each named participant counts; votes from others are
  ignored, and so are votes that arrive after the deadline or after the
  decision: a decision once stored is never changed.
* A voter whose callback finishes after the proposal's deadline does not vote.
* A vote counts for the voter its *subject* names, never for a body field
  (a body naming someone else is ignored): with ``[auth]`` a worker may
  publish only ``S(vote).<its own agent id>`` (broker.permissions), so the
  server itself stops a vote in another's name.
* Proposals come from any client, so a voter trusts none of their numbers:
  a ``timeout`` that is not a finite number is refused and one above
  :data:`MAX_TIMEOUT` is cut to it; participants must be a list of strings
  (at most :data:`MAX_PARTICIPANTS`); a voter holds at most
  ``max_pending`` proposals (running or waiting for a slot) and drops the
  rest with a warning naming the subject.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from broker import (
    NATS_ERRORS,
    Connection,
    KeyNotFoundError,
    KeyValueBucket,
    Message,
    WrongRevisionError,
    codec,
    jetstream,
    streams,
    subjects,
)
from config.errors import BrokerError, ProtocolError
from protocols.metrics import timed_round

log = logging.getLogger("foundation.protocols.consensus")

CONSENSUS_BUCKET = subjects.CONSENSUS_BUCKET
YES, NO, ABSTAIN = "yes", "no", "abstain"
_VOTES = (YES, NO, ABSTAIN)
_VERSION = 1
MAX_TIMEOUT = 300.0  # seconds: the longest a voter works on one proposal
MAX_PARTICIPANTS = 10_000

Outcome = Literal["accepted", "rejected", "timeout"]
Finder = Callable[[str], Awaitable[list[str]]]


class ConsensusError(ProtocolError):
    """A consensus round could not be run as asked."""


class DecisionExistsError(ConsensusError):
    """A decision is already stored for this session; sessions are single-use."""


@dataclass(frozen=True)
class Quorum:
    """The decision rule: how much yes weight accepts a proposal.

    Attributes:
        rule: ``majority`` (yes > half the total), ``count`` (yes >= value) or
            ``fraction`` (yes >= value * total).
        value: the count or fraction for the last two rules.
        weights: per-participant weight; absent participants weigh 1.
    """

    rule: Literal["majority", "count", "fraction"] = "majority"
    value: float = 0.0
    weights: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if self.rule == "fraction" and not 0 < self.value <= 1:
            raise ConsensusError(f"a fraction quorum needs 0 < value <= 1, got {self.value}")
        if self.rule == "count" and self.value <= 0:
            raise ConsensusError(f"a count quorum needs value > 0, got {self.value}")
        if self.rule not in ("majority", "count", "fraction"):
            raise ConsensusError(f"unknown quorum rule {self.rule!r}; use majority, count or fraction")
        if self.weights and any(w < 0 for w in self.weights.values()):
            raise ConsensusError("quorum weights must be >= 0")

    @classmethod
    def majority(cls, weights: Mapping[str, float] | None = None) -> Quorum:
        return cls("majority", 0.0, weights)

    @classmethod
    def at_least(cls, count: float, weights: Mapping[str, float] | None = None) -> Quorum:
        return cls("count", count, weights)

    @classmethod
    def fraction(cls, value: float, weights: Mapping[str, float] | None = None) -> Quorum:
        return cls("fraction", value, weights)

    def weight(self, participant: str) -> float:
        return 1.0 if self.weights is None else float(self.weights.get(participant, 1.0))

    def passes(self, yes: float, total: float) -> bool:
        if self.rule == "majority":
            return 2 * yes > total
        if self.rule == "count":
            return yes >= self.value
        return yes >= self.value * total - 1e-9

    def describe(self) -> str:
        return "majority" if self.rule == "majority" else f"{self.rule}>={self.value:g}"


@dataclass(frozen=True)
class Ballot:
    """One participant's answer."""

    vote: Literal["yes", "no", "abstain"]
    reason: str = ""


@dataclass(frozen=True)
class Proposal:
    """A proposal as a voter sees it; ``deadline`` is on the voter's loop clock."""

    session: str
    group: str
    proposer: str
    value: Any
    participants: tuple[str, ...]
    deadline: float


@dataclass(frozen=True)
class Decision:
    """The outcome of one round; stored and published as a dict."""

    group: str
    session: str
    proposer: str
    value: Any
    outcome: Outcome
    quorum: str
    yes: list[str]
    no: list[str]
    abstain: list[str]
    unanswered: list[str]
    yes_weight: float
    total_weight: float
    reasons: dict[str, str] = field(default_factory=dict)
    decided_at: float = 0.0  # wall clock, seconds since the epoch (informational)
    elapsed_ms: float = 0.0

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"

    def to_dict(self) -> dict[str, Any]:
        return {"v": _VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> Decision:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in body.items() if k in known})


class Tally:
    """Counts votes for one round (pure; no I/O).

    Args:
        participants: who may vote.
        quorum: the decision rule.
        deadline: the instant (caller's clock) after which votes are late.
    """

    def __init__(self, participants: Sequence[str], quorum: Quorum, deadline: float) -> None:
        self.participants = tuple(dict.fromkeys(participants))
        self.quorum = quorum
        self.deadline = deadline
        self.ballots: dict[str, Ballot] = {}
        self.closed = False
        self.total = sum(quorum.weight(p) for p in self.participants)

    def add(self, voter: str, ballot: Ballot, now: float) -> str:
        """Record a vote; returns ``counted``, ``duplicate``, ``stranger`` or ``late``."""
        if self.closed or now > self.deadline:
            return "late"
        if voter not in self.participants:
            return "stranger"
        if voter in self.ballots:
            return "duplicate"
        self.ballots[voter] = ballot
        return "counted"

    def _weight(self, vote: str) -> float:
        return sum(self.quorum.weight(v) for v, b in self.ballots.items() if b.vote == vote)

    def outcome(self) -> Outcome | None:
        """The outcome if it is already certain, else ``None``."""
        yes = self._weight(YES)
        if self.quorum.passes(yes, self.total):
            return "accepted"
        silent = sum(self.quorum.weight(p) for p in self.participants if p not in self.ballots)
        if not self.quorum.passes(yes + silent, self.total):
            return "rejected"
        return None

    def close(self) -> Outcome:
        """Stop counting; the outcome, ``timeout`` if still uncertain."""
        self.closed = True
        return self.outcome() or "timeout"

    def voters(self, vote: str) -> list[str]:
        return [p for p in self.participants if p in self.ballots and self.ballots[p].vote == vote]


_buckets: weakref.WeakKeyDictionary[Connection, KeyValueBucket] = weakref.WeakKeyDictionary()


async def decision_bucket(nc: Connection) -> KeyValueBucket:
    """The ``consensus`` KV bucket (opened once per connection)."""
    kv = _buckets.get(nc)
    if kv is None:
        kv = await streams.key_value(jetstream(nc), CONSENSUS_BUCKET, history=1)
        _buckets[nc] = kv
    return kv


def registry_finder(registry: Any) -> Finder:
    """A finder over the agent registry (anything with ``find(capability=...)`` → entries with ``.id``)."""

    async def find(capability: str) -> list[str]:
        return sorted(entry.id for entry in registry.find(capability=capability))

    return find


def _subject(group: str, session: str, phase: str) -> str:
    try:
        return subjects.coord("consensus", group, session, phase)
    except BrokerError as exc:
        raise ConsensusError(f"bad consensus name: {exc}") from exc


def vote_subject(group: str, session: str, voter: str) -> str:
    """``coord.consensus.<group>.<session>.vote.<voter id>``: where ``voter``'s vote goes (its dots make tokens)."""
    try:
        return ".".join([_subject(group, session, "vote"), *(subjects.token(t, "voter id") for t in voter.split("."))])
    except BrokerError as exc:
        raise ConsensusError(f"bad voter id {voter!r}: {exc}") from exc


def proposals_of(group: str) -> str:
    """The wildcard subject of every proposal to ``group``."""
    # The builder refuses wildcards; build one session's subject and swap the token.
    head, _session, phase = _subject(group, "_", "propose").rsplit(".", 2)
    return f"{head}.*.{phase}"


@timed_round("consensus", lambda decision: decision.outcome)
async def propose(
    nc: Connection,
    group: str,
    value: Any,
    *,
    participants: Sequence[str] | None = None,
    capability: str | None = None,
    finder: Finder | None = None,
    quorum: Quorum | None = None,
    deadline: float = 1.0,
    session: str | None = None,
    proposer: str = "",
    store: bool = True,
) -> Decision:
    """Run one consensus round and return its decision.

    Args:
        nc: the NATS connection.
        group: the voting group (one subject token).
        value: the proposed value (JSON-serialisable).
        participants: who votes; or give ``capability`` and ``finder``.
        capability: find participants with ``await finder(capability)``.
        finder: the participant lookup (e.g. the registry's).
        quorum: the decision rule; majority when omitted.
        deadline: seconds from now to collect votes.
        session: a fresh id when omitted; sessions are single-use.
        proposer: the proposer's id, for the record.
        store: write the decision to the ``consensus`` bucket.

    Raises:
        ConsensusError: no participants, a quorum no one can reach, or NATS failed.
        DecisionExistsError: ``session`` already has a stored decision.
    """
    quorum = quorum or Quorum.majority()
    if participants is None:
        if capability is None or finder is None:
            raise ConsensusError("give participants, or a capability and a finder to look them up")
        participants = await finder(capability)
    if not participants:
        raise ConsensusError(f"no participants for group {group!r}; nothing can be decided")
    if deadline <= 0:
        raise ConsensusError(f"deadline must be > 0 seconds, got {deadline}")
    session = session or uuid.uuid4().hex[:16]
    loop = asyncio.get_running_loop()
    started = loop.time()
    tally = Tally(participants, quorum, started + deadline)
    if quorum.rule == "count" and quorum.value > tally.total:
        raise ConsensusError(f"quorum of {quorum.value:g} can never be reached by total weight {tally.total:g}")
    certain = asyncio.Event()

    votes = _subject(group, session, "vote")

    async def _on_vote(msg: Message) -> None:
        voter = msg.subject[len(votes) + 1:]  # who sent it, as far as the server's permissions know
        try:
            body = codec.decode(msg.data, 64 * 1024)
            ballot = Ballot(body["vote"], str(body.get("reason", "")))
            if body.get("session") != session or ballot.vote not in _VOTES:
                raise ValueError("wrong session or vote")
            if str(body.get("voter", voter)) != voter:
                raise ValueError(f"vote on {voter}'s subject names {body.get('voter')!r}")
        except (codec.CodecError, KeyError, TypeError, ValueError) as exc:
            log.warning("consensus %s/%s: malformed vote on %s ignored: %s", group, session, msg.subject, exc)
            return
        status = tally.add(voter, ballot, loop.time())
        if status != "counted":
            log.info("consensus %s/%s: %s vote from %s ignored", group, session, status, voter)
        elif tally.outcome() is not None:
            certain.set()

    proposal = {
        "v": _VERSION, "session": session, "group": group, "proposer": proposer,
        "value": value, "participants": list(tally.participants), "timeout": deadline,
    }
    try:
        sub = await nc.subscribe(f"{votes}.>", cb=_on_vote)
        try:
            await nc.publish(_subject(group, session, "propose"), codec.encode(proposal))
            try:
                await asyncio.wait_for(certain.wait(), deadline)
            except asyncio.TimeoutError:
                pass
        finally:
            outcome = tally.close()  # anything arriving from here on is late
            await sub.unsubscribe()
        decision = Decision(
            group=group, session=session, proposer=proposer, value=value, outcome=outcome,
            quorum=quorum.describe(), yes=tally.voters(YES), no=tally.voters(NO),
            abstain=tally.voters(ABSTAIN),
            unanswered=[p for p in tally.participants if p not in tally.ballots],
            yes_weight=sum(quorum.weight(p) for p in tally.voters(YES)), total_weight=tally.total,
            reasons={p: b.reason for p, b in tally.ballots.items() if b.reason},
            decided_at=time.time(), elapsed_ms=(loop.time() - started) * 1000,
        )
        body = codec.encode(decision.to_dict())
        if store:
            kv = await decision_bucket(nc)
            try:
                await kv.create(f"{group}.{session}", body)
            except WrongRevisionError as exc:
                raise DecisionExistsError(
                    f"session {session!r} of group {group!r} already has a decision; use a fresh session"
                ) from exc
        await nc.publish(_subject(group, session, "decision"), body)
    except NATS_ERRORS as exc:
        raise ConsensusError(f"consensus round {group}/{session} failed: {exc!r}; is NATS reachable?") from exc
    return decision


async def read_decision(nc: Connection, group: str, session: str) -> Decision | None:
    """The stored decision of a session, or ``None`` if there is none (yet)."""
    kv = await decision_bucket(nc)
    try:
        entry = await kv.get(f"{group}.{session}")
    except KeyNotFoundError:
        return None
    except NATS_ERRORS as exc:
        raise ConsensusError(f"cannot read decision {group}/{session}: {exc!r}") from exc
    return Decision.from_dict(codec.decode(entry.value or b"{}"))


def parse_proposal(data: bytes, now: float) -> Proposal:
    """A proposal from the wire, its deadline on the clock that gave ``now``.

    Raises:
        ConsensusError: not a proposal, or a number or list of the wrong shape.
    """
    try:
        body = codec.decode(data, 1024 * 1024)
    except codec.CodecError as exc:
        raise ConsensusError(f"proposal is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ConsensusError("a proposal is a JSON object")
    session, group, proposer = body.get("session"), body.get("group"), body.get("proposer", "")
    if not all(isinstance(x, str) for x in (session, group, proposer)) or not session:
        raise ConsensusError("session, group and proposer must be strings")
    timeout = body.get("timeout")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout < 0:
        raise ConsensusError(f"timeout {timeout!r} is not a finite number of seconds")
    participants = body.get("participants") or []
    if (not isinstance(participants, list) or len(participants) > MAX_PARTICIPANTS
            or not all(isinstance(p, str) for p in participants)):
        raise ConsensusError(f"participants must be a list of at most {MAX_PARTICIPANTS} strings")
    return Proposal(session=session, group=group, proposer=proposer, value=body.get("value"),
                    participants=tuple(participants), deadline=now + min(float(timeout), MAX_TIMEOUT))


Answer = Ballot | bool | str
Decide = Callable[[Proposal], Awaitable[Answer] | Answer]


def _ballot(answer: Answer) -> Ballot:
    if isinstance(answer, Ballot):
        return answer
    if isinstance(answer, bool):
        return Ballot(YES if answer else NO)
    if answer in _VOTES:
        return Ballot(answer)  # type: ignore[arg-type]
    raise ConsensusError(f"a vote must be a Ballot, a bool or one of {_VOTES}, got {answer!r}")


@dataclass
class VoterStats:
    voted: int = 0
    late: int = 0
    skipped: int = 0  # proposals this voter was not a participant of
    failed: int = 0  # callback errors, answered as abstentions
    malformed: int = 0  # proposals refused by parse_proposal
    dropped: int = 0  # proposals over max_pending


class Voter:
    """The agent side: answers every proposal of a group with a callback.

    ``decide(proposal)`` may be sync or async and returns a :class:`Ballot`, a
    bool (yes/no) or ``"yes"|"no"|"abstain"``. A callback that raises abstains
    with the error as its reason; one that finishes after the deadline does
    not vote. Proposals are answered concurrently, up to ``max_concurrent``.

    Use ``async with Voter(...)``, or :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self, nc: Connection, group: str, voter_id: str, decide: Decide, *, max_concurrent: int = 64,
        max_pending: int | None = None,
    ) -> None:
        vote_subject(group, "_", voter_id)  # a voter id that cannot name a subject is refused here
        self.nc = nc
        self.group = group
        self.voter_id = voter_id
        self.stats = VoterStats()
        self._decide = decide
        self._slots = asyncio.Semaphore(max_concurrent)
        self.max_pending = max_pending if max_pending is not None else 4 * max_concurrent
        self._sub: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Subscribe; returns once the server knows the subscription."""
        self._sub = await self.nc.subscribe(proposals_of(self.group), cb=self._on_proposal)
        await self.nc.flush()

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> Voter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _on_proposal(self, msg: Message) -> None:
        loop = asyncio.get_running_loop()
        try:
            proposal = parse_proposal(msg.data, loop.time())
            reply = vote_subject(self.group, proposal.session, self.voter_id)
        except ConsensusError as exc:
            self.stats.malformed += 1
            log.warning("voter %s: proposal on %s ignored: %s", self.voter_id, msg.subject, exc)
            return
        if proposal.participants and self.voter_id not in proposal.participants:
            self.stats.skipped += 1
            return
        if len(self._tasks) >= self.max_pending:
            self.stats.dropped += 1
            log.warning("voter %s: %d proposals in hand; %s dropped", self.voter_id, len(self._tasks), msg.subject)
            return
        task = loop.create_task(self._answer(proposal, reply))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, proposal: Proposal, reply: str) -> None:
        loop = asyncio.get_running_loop()
        async with self._slots:
            try:
                answer = self._decide(proposal)
                if inspect.isawaitable(answer):
                    answer = await asyncio.wait_for(answer, max(proposal.deadline - loop.time(), 0.0))
                ballot = _ballot(answer)
            except asyncio.TimeoutError:
                self.stats.late += 1
                log.info("voter %s: no answer to %s before its deadline", self.voter_id, proposal.session)
                return
            except Exception as exc:  # a broken callback abstains rather than stalling the round
                self.stats.failed += 1
                ballot = Ballot(ABSTAIN, f"error: {codec.one_line(repr(exc), 200)}")
            if loop.time() > proposal.deadline:
                self.stats.late += 1
                return
            vote = {"v": _VERSION, "session": proposal.session, "voter": self.voter_id,
                    "vote": ballot.vote, "reason": ballot.reason}
            try:
                await self.nc.publish(reply, codec.encode(vote))
                self.stats.voted += 1
            except NATS_ERRORS as exc:
                log.warning("voter %s: vote on %s not sent: %r", self.voter_id, proposal.session, exc)
