"""Byzantine participants for the simulation bus, one class per behaviour.

Each wraps an honest :class:`Tendermint` driven by the same inputs, so it
follows rounds and timeouts like everyone else, and rewrites what that machine
sends. Byzantine members know each other (``Context.coalition``) and split the
honest members into sides by sorted position (:meth:`Context.side`); the
colluding behaviours tell each side a different value, ``evil#<side>``, which
is what it takes to break agreement once they are more than f.

Behaviours (see :data:`BEHAVIOURS`): ``silent``, ``equivocator``,
``double-voter``, ``amnesiac``, ``forger``, ``wrong-digest``, ``replayer``,
``twins``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from protocols.bft.keys import Signer
from protocols.bft.machine import Effects, Send, Tendermint, Timeout, TimeoutPolicy
from protocols.bft.messages import PRECOMMIT, PREVOTE, PROPOSAL, Message, decode, digest


@dataclass(frozen=True)
class Context:
    """What a Byzantine member knows when it is built."""

    member: str
    signer: Signer
    members: Mapping[str, str]
    group: str
    instance: str
    proposal: Any
    validate: Callable[[Any], bool]
    timeouts: TimeoutPolicy
    coalition: frozenset[str]
    foreign: tuple[bytes, ...] = field(default=())  # genuine traffic captured from other instances

    def honest_peers(self) -> list[str]:
        return sorted(m for m in self.members if m not in self.coalition)

    def side(self, peer: str, sides: int = 2) -> int:
        honest = self.honest_peers()
        return honest.index(peer) % sides if peer in honest else 0

    def machine(self, proposal: Any = None) -> Tendermint:
        return Tendermint(
            group=self.group, instance=self.instance, signer=self.signer, members=self.members,
            proposal=self.proposal if proposal is None else proposal, validate=self.validate,
            timeouts=self.timeouts,
        )


def evil(side: int) -> str:
    """The value colluders push to honest side ``side``."""
    return f"evil#{side}"


class Byzantine:
    """Base: an honest inner machine whose output :meth:`tamper` rewrites."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.inner = ctx.machine()

    def start(self) -> Effects:
        return self.tamper(self.inner.start())

    def receive(self, data: bytes) -> Effects:
        return self.tamper(self.inner.receive(data))

    def on_timeout(self, timeout: Timeout) -> Effects:
        return self.tamper(self.inner.on_timeout(timeout))

    def rebroadcast(self) -> Effects:
        return self.tamper(self.inner.rebroadcast())

    def tamper(self, fx: Effects) -> Effects:
        return fx

    def sign(self, msg: Message, **changes: Any) -> bytes:
        return replace(msg, **changes).signed(self.ctx.signer).encode()

    def peers(self) -> list[str]:
        return sorted(m for m in self.ctx.members if m != self.ctx.member)


class Silent(Byzantine):
    """Never says anything."""

    def tamper(self, fx: Effects) -> Effects:
        return Effects(timeouts=fx.timeouts)


class Equivocator(Byzantine):
    """As proposer, tells every honest peer a different value; votes for whatever it told each.

    Its votes follow the inner machine's timing but always name the value of
    the receiving peer's side, in every round.
    """

    def __init__(self, ctx: Context, sides: int | None = None) -> None:
        super().__init__(ctx)
        self.sides = sides or max(1, len(ctx.honest_peers()))

    def tamper(self, fx: Effects) -> Effects:
        out = Effects(timeouts=fx.timeouts, decision=fx.decision)
        for send in fx.sends:
            msg = decode(send.data)
            if msg.kind == PROPOSAL and msg.valid_round == -1:
                for p in self.peers():
                    v = evil(self.ctx.side(p, self.sides))
                    out.sends.append(Send(self.sign(msg, value=v, digest=digest(v)), PROPOSAL, p))
            elif msg.kind in (PREVOTE, PRECOMMIT):
                for p in self.peers():
                    d = digest(evil(self.ctx.side(p, self.sides)))
                    out.sends.append(Send(self.sign(msg, digest=d), msg.kind, p))
            else:
                out.sends.append(send)
        return out


class DoubleVoter(Byzantine):
    """Signs conflicting votes per round and kind, and the same vote twice.

    Each peer first gets a vote for its side's ``evil`` value, then the vote
    the honest machine would have sent, then that same vote re-signed with an
    extra field (a distinct signature for an identical vote, so a receiver
    that counted messages rather than senders would count it twice). A
    receiver keeps whichever arrives first and refuses the others as
    equivocation.
    """

    def tamper(self, fx: Effects) -> Effects:
        out = Effects(timeouts=fx.timeouts, decision=fx.decision)
        for send in fx.sends:
            msg = decode(send.data)
            if msg.kind in (PREVOTE, PRECOMMIT):
                again = self.sign(msg, extra={"again": True})
                for p in self.peers():
                    out.sends.append(Send(self.sign(msg, digest=digest(evil(self.ctx.side(p)))), msg.kind, p))
                    out.sends.append(Send(send.data, msg.kind, p))
                    out.sends.append(Send(again, msg.kind, p))
            else:
                out.sends.append(send)
        return out


class Amnesiac(Byzantine):
    """Forgets its lock after every step, so it prevotes any valid proposal."""

    def tamper(self, fx: Effects) -> Effects:
        self.inner._locked = (-1, None)  # the one piece of state an amnesia attack drops
        return fx


class Forger(Byzantine):
    """Takes part honestly, and around each message sends forgeries.

    For every message: a copy claiming another member sent it (signed with
    our key: a forged signature), a copy with its signature bits flipped, an
    unsigned copy, and one from a member that does not exist.
    """

    def tamper(self, fx: Effects) -> Effects:
        out = Effects(timeouts=fx.timeouts, decision=fx.decision)
        peers = self.peers()
        for i, send in enumerate(fx.sends):
            msg = decode(send.data)
            victim = peers[(msg.round + i) % len(peers)]
            bogus = digest(f"forged-{msg.round}-{i}")
            out.sends.append(Send(self.sign(msg, sender=victim, digest=bogus, value=None), send.phase))
            flipped = bytes(b ^ 0xFF for b in msg.signed(self.ctx.signer).sig)
            out.sends.append(Send(replace(msg, digest=bogus, value=None, sig=flipped).encode(), send.phase))
            out.sends.append(Send(replace(msg, digest=bogus, sig=b"").encode(), send.phase))
            out.sends.append(Send(self.sign(msg, sender="ghost", digest=bogus), send.phase))
            out.sends.append(send)
        return out


class WrongDigest(Byzantine):
    """Proposes a value under another value's digest; votes for digests nobody proposed."""

    def tamper(self, fx: Effects) -> Effects:
        out = Effects(timeouts=fx.timeouts, decision=fx.decision)
        for send in fx.sends:
            msg = decode(send.data)
            if msg.kind == PROPOSAL:
                out.sends.append(Send(self.sign(msg, digest=digest(["not", msg.value])), PROPOSAL))
            elif msg.kind in (PREVOTE, PRECOMMIT):
                out.sends.append(Send(self.sign(msg, digest=digest(["phantom", msg.round])), msg.kind))
            else:
                out.sends.append(send)
        return out


class Replayer(Byzantine):
    """Takes part honestly, and on every tick replays old traffic.

    It re-sends messages it received in earlier rounds (genuinely signed by
    their senders) and messages captured from other instances and groups.
    """

    def __init__(self, ctx: Context, per_tick: int = 24) -> None:
        super().__init__(ctx)
        self.heard: list[tuple[int, bytes]] = []  # (round it arrived in, bytes)
        self.per_tick = per_tick
        self._cursor = 0

    def receive(self, data: bytes) -> Effects:
        self.heard.append((self.inner.round, data))
        return super().receive(data)

    def rebroadcast(self) -> Effects:
        fx = super().rebroadcast()
        old = [d for r, d in self.heard if r < self.inner.round] + list(self.ctx.foreign)
        for k in range(min(self.per_tick, len(old))):
            data = old[(self._cursor + k) % len(old)]
            fx.sends.append(Send(data, "replay"))
        self._cursor += self.per_tick
        return fx


def _single(cls: type[Byzantine]) -> Callable[[Context], list[tuple[str, Any]]]:
    return lambda ctx: [(ctx.member, cls(ctx))]


def _twins(ctx: Context) -> list[tuple[str, Any]]:
    # Two honest machines sharing one key, proposing different values: each is
    # indistinguishable from an honest member to whoever only talks to it.
    return [(ctx.member, ctx.machine(proposal=evil(0))), (f"{ctx.member}~twin", ctx.machine(proposal=evil(1)))]


BEHAVIOURS: dict[str, Callable[[Context], list[tuple[str, Any]]]] = {
    "silent": _single(Silent),
    "equivocator": _single(Equivocator),
    "double-voter": _single(DoubleVoter),
    "amnesiac": _single(Amnesiac),
    "forger": _single(Forger),
    "wrong-digest": _single(WrongDigest),
    "replayer": _single(Replayer),
    "twins": _twins,
}
"""Behaviour name -> builder of its endpoints ``[(endpoint name, node)]``."""
