"""The Tendermint state machine for one instance: events in, effects out, no I/O.

Inputs are wire bytes (:meth:`Tendermint.receive`), timeouts the machine asked
for (:meth:`Tendermint.on_timeout`) and the transport's periodic re-broadcast
tick (:meth:`Tendermint.rebroadcast`). Outputs are :class:`Effects`: signed
messages to publish, timeouts to schedule, and at most once a
:class:`Decision`. The same object runs on the simulation bus and on NATS.

The rules follow the numbered "upon" clauses of Tendermint (see the package
docstring); the comments name them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from protocols.bft.auth import BAD_CERTIFICATE, BAD_PROOF, Authenticator
from protocols.bft.certificate import Certificate, build_certificate, verify_certificate
from protocols.bft.errors import CertificateError, MalformedMessageError, MembershipError
from protocols.bft.keys import Signer
from protocols.bft.messages import (
    DECISION,
    MAX_VALUE_BYTES,
    PRECOMMIT,
    PREVOTE,
    PROPOSAL,
    Message,
    decode,
    digest,
    normalize,
    value_size,
)
from protocols.bft.quorum import fault_bound, quorum, skip_threshold
from protocols.metrics import BFT_ROUND_CHANGES
from protocols.bft.votelog import VoteLog

# Steps of a round.
STEP_PROPOSE = "propose"
STEP_PREVOTE = "prevote"
STEP_PRECOMMIT = "precommit"


@dataclass(frozen=True)
class TimeoutPolicy:
    """Step timeouts: ``base + increment * round`` seconds.

    They grow with the round so that, once the network delivers within some
    unknown bound again, a round eventually lasts long enough to decide.
    """

    propose: float = 1.0
    prevote: float = 1.0
    precommit: float = 1.0
    increment: float = 0.5

    def delay(self, step: str, round_: int) -> float:
        base = {STEP_PROPOSE: self.propose, STEP_PREVOTE: self.prevote, STEP_PRECOMMIT: self.precommit}[step]
        return base + self.increment * round_


@dataclass(frozen=True, slots=True)
class Send:
    """Publish ``data`` on the instance's ``phase`` subject (``to``: one endpoint, for simulations)."""

    data: bytes
    phase: str
    to: str | None = None


@dataclass(frozen=True, slots=True)
class Timeout:
    """Call :meth:`Tendermint.on_timeout` with this object after ``delay`` seconds."""

    step: str
    round: int
    delay: float


@dataclass(frozen=True)
class Decision:
    value: Any
    certificate: Certificate


@dataclass
class Effects:
    sends: list[Send] = field(default_factory=list)
    timeouts: list[Timeout] = field(default_factory=list)
    decision: Decision | None = None


class Tendermint:
    """One participant's view of one instance.

    Args:
        group, instance: what is being decided.
        signer: this participant's identity; its id must be a member.
        members: participant id -> public key, for every member.
        proposal: the value this participant proposes when it leads a round.
        validate: the proposal predicate; must be deterministic across members.
        timeouts: step timeouts.
        max_round_ahead: future rounds beyond this are refused (memory bound).

    Raises:
        MembershipError: the signer is not a member, or its key differs.
    """

    def __init__(
        self, *, group: str, instance: str, signer: Signer, members: Mapping[str, str], proposal: Any,
        validate: Callable[[Any], bool] | None = None, timeouts: TimeoutPolicy | None = None,
        max_round_ahead: int = 64,
    ) -> None:
        if members.get(signer.id) != signer.public_key:
            raise MembershipError(f"{signer.id!r} is not a member of {group!r} with this key; check the key directory")
        self.group, self.instance, self.me = group, instance, signer.id
        self.n = len(members)
        self.f = fault_bound(self.n)
        self.quorum = quorum(self.n)
        self._skip = skip_threshold(self.n)
        self._signer = signer
        self._members = dict(members)
        self._proposal = normalize(proposal)
        check = validate or (lambda _v: True)
        # Every member applies the same size bound, so a value too large to
        # reach a late member in a decision is never accepted.
        self._validate = lambda v: _fits(v) and check(v)
        self._timeouts = timeouts or TimeoutPolicy()
        self._auth = Authenticator(group, instance, members)
        self._log = VoteLog(list(members), group, instance, max_round_ahead)
        self.round = 0
        self.step = STEP_PROPOSE
        self.started = False
        self.decision: Decision | None = None
        self._locked: tuple[int, str | None] = (-1, None)  # (lockedRound, digest of lockedValue)
        self._valid: tuple[int, Any, tuple[dict, ...]] = (-1, None, ())  # (validRound, validValue, its proof)
        self._fired: set[tuple[str, int]] = set()  # "for the first time" clauses already taken
        self._mine: dict[str, Message] = {}  # our messages of the current round, by kind
        self._decision_msg: Message | None = None
        self._peer_waiting = False  # after deciding: heard someone still voting since the last tick
        self._fx = Effects()

    @property
    def rejected(self) -> Counter[str]:
        """Refused messages by reason (see :mod:`protocols.bft.auth`)."""
        return self._auth.rejected

    # -- inputs ---------------------------------------------------------------

    def start(self) -> Effects:
        """Enter round 0."""
        if not self.started:
            self.started = True
            if self.decision is None:
                self._start_round(0)
                self._evaluate()
        return self._take()

    def receive(self, data: bytes) -> Effects:
        """Handle wire bytes from the instance's subjects."""
        if self.decision is not None:
            self._answer_after_decision(data)
            return self._take()
        msg = self._auth.check(data)
        if msg is not None:
            self._accept(msg, data)
            self._evaluate()
        return self._take()

    def on_timeout(self, timeout: Timeout) -> Effects:
        """A timeout this machine scheduled has expired."""
        if self.decision is None and timeout.round == self.round:
            if timeout.step == STEP_PROPOSE and self.step == STEP_PROPOSE:
                self._vote(PREVOTE, None)  # OnTimeoutPropose: prevote nil
            elif timeout.step == STEP_PREVOTE and self.step == STEP_PREVOTE:
                self._vote(PRECOMMIT, None)  # OnTimeoutPrevote: precommit nil
            elif timeout.step == STEP_PRECOMMIT:
                self._start_round(self.round + 1, "timeout")  # OnTimeoutPrecommit
            self._evaluate()
        return self._take()

    def rebroadcast(self) -> Effects:
        """What to publish again on the transport's periodic tick.

        Core NATS delivers at most once, and Tendermint's liveness assumes
        every message eventually reaches every honest member. So until it
        decides, a member relays what it holds for its current round (the
        proposal and everyone's votes, signatures intact) and the precommits
        of the round before: exactly what a member behind it needs, either to
        time out of that round or to see f + 1 senders of a later one.
        Receivers drop copies after one set lookup. Once decided, a member
        repeats its decision only while it keeps hearing members still voting.
        """
        if self.decision is not None:
            if self._peer_waiting and self._decision_msg is not None:
                self._peer_waiting = False
                self._fx.sends.append(Send(self._decision_msg.encode(), DECISION))
            return self._take()
        r, log = self.round, self._log
        held: dict[bytes, Message] = {m.sig: m for m in self._mine.values()}
        if r in log.proposals:
            held.setdefault(log.proposals[r].sig, log.proposals[r])
        for book in (log.prevotes.get(r, {}), log.precommits.get(r, {}), log.precommits.get(r - 1, {})):
            for m in book.values():
                held.setdefault(m.sig, m)
        for msg in held.values():
            self._fx.sends.append(Send(self._auth.wire(msg), msg.kind))
        return self._take()

    # -- acceptance -----------------------------------------------------------

    def _accept(self, msg: Message, data: bytes | None = None) -> None:
        if msg.kind == DECISION:
            self._accept_decision(msg)
            return
        if msg.kind == PROPOSAL and msg.valid_round >= 0 and not self._auth.justified(msg, self.quorum):
            self._auth.reject(BAD_PROOF)
            self._auth.refused(msg)
            return
        reason = self._log.add(msg, self.round)
        if reason is not None:
            self._auth.reject(reason)
            self._auth.refused(msg)
        elif data is not None:
            self._auth.accepted(msg, data)

    def _accept_decision(self, msg: Message) -> None:
        try:
            # The value travels once, in the message; its digest was checked against it.
            cert = Certificate.from_dict({**(msg.certificate or {}), "value": msg.value})
            value = verify_certificate(cert, self._members)
        except CertificateError:
            self._auth.reject(BAD_CERTIFICATE)
            return
        if (cert.group, cert.instance) != (self.group, self.instance) or not self._validate(value):
            self._auth.reject(BAD_CERTIFICATE)
            return
        self._decide(value, cert)

    def _answer_after_decision(self, data: bytes) -> None:
        # A member still voting has missed the decision; answer at once the
        # first time, then on re-broadcast ticks (cheap: no signature check,
        # the worst a forger gains is one extra decision message per tick).
        try:
            msg = decode(data)
        except MalformedMessageError:
            return
        if msg.kind == DECISION or msg.sender == self.me or (msg.group, msg.instance) != (self.group, self.instance):
            return
        cert = self.decision.certificate if self.decision else None
        if cert and msg.kind == PRECOMMIT and (msg.round, msg.digest) == (cert.round, cert.digest):
            return  # a late vote of the deciding quorum itself: its sender decides from the same votes
        if not self._peer_waiting and self._decision_msg is not None:
            self._fx.sends.append(Send(self._decision_msg.encode(), DECISION))
        self._peer_waiting = True

    # -- the rules ------------------------------------------------------------

    def _evaluate(self) -> None:
        """Apply every enabled rule until none is (a fixpoint)."""
        while self.started and self.decision is None:
            if self._try_decide() or self._try_skip() or self._try_step():
                continue
            break

    def _try_decide(self) -> bool:
        # upon PROPOSAL(r, v) and 2f+1 PRECOMMIT(r, id(v)), any round r: decide v.
        # The value may come from any accepted proposal with that digest.
        log = self._log
        while log.dirty_precommit_rounds:
            r = log.dirty_precommit_rounds.pop()
            tally = Counter(m.digest for m in log.precommits.get(r, {}).values() if m.digest is not None)
            for d, count in tally.items():
                if count >= self.quorum and d in log.values and self._validate(log.values[d]):
                    votes = log.voters(PRECOMMIT, r, d)[: self.quorum]
                    self._decide(log.values[d], build_certificate(self.group, self.instance, r, log.values[d], votes))
                    return True
        return False

    def _try_skip(self) -> bool:
        # upon f+1 messages of a round above ours: jump to it (the highest such).
        ahead = [r for r, who in self._log.senders.items() if r > self.round and len(who) >= self._skip]
        if ahead:
            self._start_round(max(ahead), "skip")
            return True
        return False

    def _try_step(self) -> bool:
        r, log = self.round, self._log
        prop = log.proposals.get(r)
        if self.step == STEP_PROPOSE and prop is not None:
            # upon PROPOSAL(r, v, vr): prevote v if valid and not locked on
            # something else since vr. A vr >= 0 proposal reached the log only
            # with a verified proof of 2f+1 prevotes in vr.
            locked_round, locked_digest = self._locked
            vr = prop.valid_round
            free = locked_round == -1 if vr == -1 else locked_round <= vr
            ok = self._validate(prop.value) and (free or locked_digest == prop.digest)
            self._vote(PREVOTE, prop.digest if ok else None)
            return True
        if self.step != STEP_PROPOSE and ("prevote-any", r) not in self._fired and log.count(PREVOTE, r) >= self.quorum:
            # upon 2f+1 PREVOTE(r, *) for the first time: start the prevote timer.
            self._fired.add(("prevote-any", r))
            self._schedule(STEP_PREVOTE)
        if self.step != STEP_PROPOSE and prop is not None and ("lock", r) not in self._fired:
            support = log.voters(PREVOTE, r, prop.digest)
            if len(support) >= self.quorum and self._validate(prop.value):
                # upon PROPOSAL(r, v) and 2f+1 PREVOTE(r, id(v)): lock and precommit
                # (if still prevoting), and remember v as the valid value.
                self._fired.add(("lock", r))
                self._valid = (r, prop.value, tuple(m.to_wire() for m in support[: self.quorum]))
                if self.step == STEP_PREVOTE:
                    self._locked = (r, prop.digest)
                    self._vote(PRECOMMIT, prop.digest)
                return True
        if self.step == STEP_PREVOTE and len(log.voters(PREVOTE, r, None)) >= self.quorum:
            self._vote(PRECOMMIT, None)  # upon 2f+1 PREVOTE(r, nil): precommit nil
            return True
        if ("precommit-any", r) not in self._fired and log.count(PRECOMMIT, r) >= self.quorum:
            # upon 2f+1 PRECOMMIT(r, *) for the first time: start the precommit timer.
            self._fired.add(("precommit-any", r))
            self._schedule(STEP_PRECOMMIT)
        return False

    # -- actions --------------------------------------------------------------

    def _start_round(self, r: int, cause: str = "") -> None:
        if cause:
            BFT_ROUND_CHANGES.labels(cause).inc()
        self.round, self.step = r, STEP_PROPOSE
        self._mine = {}
        self._log.prune(r)
        if self._log.proposer(r) != self.me:
            self._schedule(STEP_PROPOSE)
            return
        valid_round, valid_value, proof = self._valid
        value = valid_value if valid_round >= 0 else self._proposal
        self._broadcast(Message(
            kind=PROPOSAL, group=self.group, instance=self.instance, round=r, sender=self.me,
            digest=digest(value), value=value, valid_round=valid_round, proof=proof if valid_round >= 0 else (),
        ))

    def _vote(self, kind: str, d: str | None) -> None:
        self.step = STEP_PREVOTE if kind == PREVOTE else STEP_PRECOMMIT
        self._broadcast(Message(
            kind=kind, group=self.group, instance=self.instance, round=self.round, sender=self.me, digest=d,
        ))

    def _broadcast(self, msg: Message) -> None:
        msg = msg.signed(self._signer)
        self._mine[msg.kind] = msg
        # Deliver to ourselves directly; the echo from the bus is then a replay.
        self._fx.sends.append(Send(self._auth.remember(msg), msg.kind))
        self._accept(msg)

    def _schedule(self, step: str) -> None:
        self._fx.timeouts.append(Timeout(step, self.round, self._timeouts.delay(step, self.round)))

    def _decide(self, value: Any, cert: Certificate) -> None:
        assert self.decision is None, "integrity: an instance decides once"
        self.decision = Decision(value, cert)
        self._fx.decision = self.decision
        self._fx.timeouts.clear()
        wire_cert = cert.to_dict()
        del wire_cert["value"]  # carried once, as the message's value
        msg = Message(
            kind=DECISION, group=self.group, instance=self.instance, round=cert.round, sender=self.me,
            digest=cert.digest, value=value, certificate=wire_cert,
        ).signed(self._signer)
        self._decision_msg = msg
        self._fx.sends.append(Send(self._auth.remember(msg), DECISION))

    def _take(self) -> Effects:
        fx, self._fx = self._fx, Effects()
        return fx


def _fits(value: Any) -> bool:
    try:
        return value_size(value) <= MAX_VALUE_BYTES
    except TypeError:
        return False
