"""A member of Byzantine groups on NATS: ``await participant.decide(group, proposal, timeout)``.

Each instance runs one :class:`~protocols.bft.machine.Tendermint` machine fed
from four core-NATS subscriptions, ``coord.bft.<group>.<instance>.<phase>``
for phase in proposal, prevote, precommit, decision. Every participant holds
its own plain subscriptions (never a queue group: each must see every
message). Core NATS delivers at most once, so a timer re-publishes what the
machine holds for its current round, first after a quarter of
``rebroadcast_interval`` and then backing off to it, until it decides. After
deciding, the instance stays subscribed for ``linger`` seconds and answers
members still voting with its decision, which is how late joiners and healed
members catch up.

A proposal larger than the protocol accepts (:data:`MAX_VALUE_BYTES`, or
less if the server's payload limit is smaller) is refused by :meth:`decide`
at once, and a publish the server refuses is logged as an error: a value
that cannot travel fails loudly instead of never reaching a late member.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from broker import NATS_ERRORS, Connection, Message, PayloadTooLargeError, subjects
from config.errors import BrokerError
from protocols.bft.certificate import Certificate
from protocols.bft.errors import (
    DecisionTimeoutError,
    InvalidInstanceError,
    InvalidProposalError,
    MembershipError,
    TransportUnavailableError,
)
from protocols.bft.keys import KeyDirectory, Signer
from protocols.bft.machine import Effects, Tendermint, Timeout, TimeoutPolicy
from protocols.bft.messages import DECISION, KINDS, MAX_MESSAGE_BYTES, MAX_VALUE_BYTES, normalize, value_size
from protocols.metrics import timed_round

log = logging.getLogger("foundation.protocols.bft")

PROTOCOL = "bft"
_DECISION_SUFFIX = "." + DECISION
NATS_TIMEOUTS = TimeoutPolicy(propose=0.5, prevote=0.5, precommit=0.5, increment=0.25)


def subject(group: str, instance: str, phase: str) -> str:
    """The subject of one phase of one instance."""
    return subjects.coord(PROTOCOL, group, instance, phase)


def _check_names(group: str, instance: str) -> None:
    try:
        subject(group, instance, DECISION)
    except BrokerError as exc:
        raise InvalidInstanceError(str(exc)) from exc
    if instance.startswith("_"):
        raise InvalidInstanceError(f"instance {instance!r}: names starting with '_' are reserved for control")


class _Instance:
    """One machine wired to NATS: subscriptions, timers, re-broadcast ticks."""

    def __init__(self, owner: Participant, group: str, instance: str, machine: Tendermint) -> None:
        self.owner = owner
        self.group, self.instance = group, instance
        self.machine = machine
        self.done: asyncio.Future[tuple[Any, Certificate]] = asyncio.get_running_loop().create_future()
        self._subs: list[Any] = []
        # Step timers, kept only to cancel on close (a few per round); the
        # re-broadcast timer is one handle, replaced at every tick.
        self._timers: set[asyncio.TimerHandle] = set()
        self._tick: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def start(self) -> None:
        nc = self.owner.nc
        try:
            for phase in KINDS:
                self._subs.append(await nc.subscribe(subject(self.group, self.instance, phase), cb=self._on_msg))
            # The server must hold our interest before we speak: members that
            # start together then hear each other's first messages instead of
            # waiting for a re-broadcast tick.
            await nc.flush()
        except (*NATS_ERRORS, asyncio.TimeoutError) as exc:
            await self.close()
            raise TransportUnavailableError(f"cannot subscribe to bft instance {self.instance!r}: {exc}") from exc
        self._schedule_tick(self.owner.rebroadcast_interval / 4)
        await self._apply(self.machine.start())

    def _schedule_tick(self, delay: float) -> None:
        # The first re-broadcasts come soon (a member that subscribed a moment
        # late should not wait long), then back off to rebroadcast_interval.
        if not self._closed:
            self._tick = asyncio.get_running_loop().call_later(delay, self._on_tick, delay)

    def _on_tick(self, delay: float) -> None:
        if self._closed:
            return
        if not self.owner.paused:
            fx = self.machine.rebroadcast()
            if fx.sends:
                self._spawn(self._apply(fx))
        self._schedule_tick(min(delay * 2, self.owner.rebroadcast_interval))

    async def _on_msg(self, msg: Message) -> None:
        if self._closed or self.owner.paused:
            return
        if self.machine.decision is not None and msg.subject.endswith(_DECISION_SUFFIX):
            return  # others' decisions teach a decided member nothing; skip parsing them
        await self._apply(self.machine.receive(msg.data))

    def _on_timer(self, timeout: Timeout) -> None:
        if not self._closed:
            self._spawn(self._apply(self.machine.on_timeout(timeout)))

    async def _apply(self, fx: Effects) -> None:
        loop = asyncio.get_running_loop()
        for t in fx.timeouts:
            self._timers.add(loop.call_later(t.delay, self._on_timer, t))
        if fx.decision is not None and not self.done.done():
            self.done.set_result((fx.decision.value, fx.decision.certificate))
        if self.owner.paused:
            return
        for send in fx.sends:
            try:
                await self.owner.nc.publish(subject(self.group, self.instance, send.phase), send.data)
            except PayloadTooLargeError as exc:
                # Never swallowed: this message can never reach anyone.
                log.error("bft %s/%s: %s of %d bytes refused by the server: %s", self.group, self.instance,
                          send.phase, len(send.data), exc)
            except NATS_ERRORS as exc:
                # At-most-once anyway: the next tick publishes again.
                log.debug("bft %s/%s: publish failed: %s", self.group, self.instance, exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closed = True
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        if self._tick is not None:
            self._tick.cancel()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        for sub in self._subs:
            with contextlib.suppress(*NATS_ERRORS):
                await sub.unsubscribe()
        self._subs.clear()
        if not self.done.done():
            self.done.cancel()


class Participant:
    """One member's endpoint for every Byzantine group it belongs to.

    Args:
        nc: a connected NATS client (this participant's own connection).
        signer: this member's identity.
        directory: public keys of each group's members.
        validate: default proposal predicate (must give every member the same answer).
        timeouts: step timeouts.
        rebroadcast_interval: the longest pause between re-publications (the
            first comes after a quarter of it, then the pause doubles).
        linger: seconds an instance keeps answering after deciding; ``None``
            until :meth:`close`.

    Attributes:
        paused: fault injection: while true, this member neither sends nor
            receives instance traffic (its timers still run), as if cut off.
    """

    def __init__(
        self, nc: Connection, signer: Signer, directory: KeyDirectory, *,
        validate: Callable[[Any], bool] | None = None, timeouts: TimeoutPolicy = NATS_TIMEOUTS,
        rebroadcast_interval: float = 0.2, linger: float | None = 10.0,
    ) -> None:
        self.nc = nc
        self.signer = signer
        self.directory = directory
        self.validate = validate
        self.timeouts = timeouts
        self.rebroadcast_interval = rebroadcast_interval
        self.linger = linger
        self.paused = False
        self._instances: dict[tuple[str, str], _Instance] = {}
        self._sequence: dict[str, itertools.count[int]] = {}
        self._lingering: dict[tuple[str, str], asyncio.Task[None]] = {}

    @property
    def id(self) -> str:
        return self.signer.id

    @timed_round("bft", "decided")
    async def decide(
        self, group: str, proposal: Any, timeout: float, *, instance: str | None = None,
        validate: Callable[[Any], bool] | None = None,
    ) -> tuple[Any, Certificate]:
        """Agree with the group's members on one value.

        Args:
            group: the group; its members and keys come from the directory.
            proposal: what this member proposes when it leads a round (JSON).
            timeout: seconds to wait for the decision.
            instance: the instance id every member passes; default: this
                member's next sequence number for the group ("0", "1", ...),
                which lines up only when all members decide in lockstep.
            validate: proposal predicate overriding the participant's default.

        Returns:
            ``(value, certificate)``: the decided value (which may be another
            member's proposal) and 2f+1 signed precommits proving it.

        Raises:
            InvalidProposalError: our own validation rejects ``proposal``.
            MembershipError: we are not a member of ``group``, or it is empty.
            InvalidInstanceError: ``group`` or ``instance`` cannot be a subject
                token, or the instance name starts with ``_`` (reserved).
            DecisionTimeoutError: no decision within ``timeout`` (this member
                then stops taking part in the instance).
            TransportUnavailableError: NATS refused the subscriptions.
        """
        members = self.directory.members(group)
        if self.id not in members:
            raise MembershipError(f"{self.id!r} is not a member of group {group!r}; add its key to the directory")
        if instance is None:
            instance = str(next(self._sequence.setdefault(group, itertools.count())))
        _check_names(group, instance)
        key = (group, instance)
        running = self._instances.get(key)
        if running is None:
            predicate = validate or self.validate or (lambda _v: True)
            try:
                ok = predicate(normalize(proposal))
            except TypeError as exc:
                raise InvalidProposalError(f"proposal is not JSON: {exc}") from exc
            if not ok:
                raise InvalidProposalError(f"proposal {proposal!r} fails validation; propose a valid value")
            # Room for the value plus the signed votes of a proof or certificate.
            limit = min(MAX_VALUE_BYTES, self.nc.max_payload - (MAX_MESSAGE_BYTES - MAX_VALUE_BYTES))
            size = value_size(proposal)
            if size > limit:
                raise InvalidProposalError(
                    f"proposal of {size} bytes exceeds the {limit} bytes a value may have here "
                    f"(the server's payload limit is {self.nc.max_payload}); store large data elsewhere and "
                    "agree on its digest"
                )
            machine = Tendermint(
                group=group, instance=instance, signer=self.signer, members=members, proposal=proposal,
                validate=predicate, timeouts=self.timeouts,
            )
            running = self._instances[key] = _Instance(self, group, instance, machine)
            await running.start()
        try:
            await asyncio.wait_for(asyncio.shield(running.done), timeout)
        except asyncio.TimeoutError:
            pass
        except asyncio.CancelledError:
            if not running.done.done():  # our caller gave up: so do we
                await self._abandon(key, running)
            raise
        if not running.done.done() or running.done.cancelled():
            await self._abandon(key, running)
            raise DecisionTimeoutError(
                f"no decision in {group}/{instance} after {timeout:.3g}s (round {running.machine.round}); "
                "are at least 2f+1 members running and connected?"
            )
        result = running.done.result()
        self._linger(key, running)
        return result

    async def _abandon(self, key: tuple[str, str], inst: _Instance) -> None:
        if self._instances.get(key) is inst:
            del self._instances[key]
        await inst.close()

    def running(self, group: str, instance: str) -> bool:
        """Whether this member is subscribed to the instance (deciding or lingering)."""
        return (group, instance) in self._instances

    def rejected(self, group: str, instance: str) -> Counter[str]:
        """Messages this member refused in an instance it still holds, by reason."""
        inst = self._instances.get((group, instance))
        return Counter(inst.machine.rejected) if inst else Counter()

    def _linger(self, key: tuple[str, str], inst: _Instance) -> None:
        if self.linger is None or key in self._lingering:
            return

        async def _expire() -> None:
            await asyncio.sleep(self.linger)  # answering late joiners for a while, then letting go
            await self._abandon(key, inst)

        task = asyncio.get_running_loop().create_task(_expire())
        self._lingering[key] = task
        task.add_done_callback(lambda _t: self._lingering.pop(key, None))

    async def close(self) -> None:
        """Stop every instance (decided or not) and drop their subscriptions."""
        for task in list(self._lingering.values()):
            task.cancel()

        instances, self._instances = list(self._instances.values()), {}
        for inst in instances:
            await inst.close()

    async def __aenter__(self) -> Participant:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
