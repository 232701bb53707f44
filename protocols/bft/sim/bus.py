"""A deterministic, seeded, in-memory message bus with a virtual clock.

It runs the same participant objects as NATS does (anything with
``start/receive/on_timeout/rebroadcast`` returning :class:`Effects`), and lets
a :class:`Schedule` drop, delay, duplicate, reorder and partition every single
delivery until the network *heals* at ``heal_at``; from then on every delivery
arrives within ``calm_delay``. Nothing reads the wall clock or global
randomness: one schedule (its ``seed`` included) always yields the same run,
which is what makes a failing schedule replayable.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from protocols.bft.errors import MalformedMessageError
from protocols.bft.machine import Decision, Effects, Send, Timeout
from protocols.bft.messages import PROPOSAL, decode


class SimNode(Protocol):
    def start(self) -> Effects: ...
    def receive(self, data: bytes) -> Effects: ...
    def on_timeout(self, timeout: Timeout) -> Effects: ...
    def rebroadcast(self) -> Effects: ...


@dataclass(frozen=True)
class Endpoint:
    """One attachment to the bus. Twins are two endpoints with the same ``member``."""

    name: str
    member: str
    node: SimNode
    honest: bool


@dataclass(frozen=True)
class Partition:
    """From ``start`` to ``end``, endpoints in different ``sides`` cannot talk."""

    start: float
    end: float
    sides: tuple[frozenset[str], ...]

    def separates(self, a: str, b: str, now: float) -> bool:
        if not self.start <= now < self.end:
            return False
        side_a = next((i for i, s in enumerate(self.sides) if a in s), -1)
        side_b = next((i for i, s in enumerate(self.sides) if b in s), -1)
        return side_a != side_b


@dataclass(frozen=True)
class Cut:
    """From ``start`` to ``end``, messages of ``kinds`` (all if empty) from ``src`` to ``dst`` are lost.

    One-way and per kind: the losses that let one member see a quorum its
    peers never see, which is what a lock must survive.
    """

    start: float
    end: float
    src: frozenset[str]
    dst: frozenset[str]
    kinds: frozenset[str] = frozenset()

    def drops(self, a: str, b: str, kind: str, now: float) -> bool:
        return (
            self.start <= now < self.end and a in self.src and b in self.dst
            and (not self.kinds or kind in self.kinds)
        )


@dataclass(frozen=True)
class Schedule:
    """Everything the network does to a run; ``repr()`` of it replays the run.

    Before ``heal_at`` each delivery is dropped with probability ``drop``
    (or when a partition separates its ends, or a cut covers it), duplicated with probability
    ``duplicate``, and delayed uniformly in ``[0, max_delay]`` (so it may
    overtake earlier ones). Endpoints named in ``late`` attach at the given
    time; deliveries before that are lost, as on core NATS.
    """

    seed: int = 0
    drop: float = 0.0
    duplicate: float = 0.0
    max_delay: float = 0.05
    partitions: tuple[Partition, ...] = ()
    cuts: tuple[Cut, ...] = ()
    heal_at: float = 0.0
    late: tuple[tuple[str, float], ...] = ()
    calm_delay: float = 0.05
    tick: float = 0.5
    horizon: float = 200.0


@dataclass
class SimResult:
    """What happened: per-endpoint decisions (every one, to check integrity) and more."""

    endpoints: list[Endpoint]
    decisions: dict[str, list[Decision]]
    decided_at: dict[str, float]
    proposed: dict[str, Any]  # digest -> value of every proposal that went on the wire
    rejected: Counter[str]  # refusals by honest endpoints, by reason
    delivered: int
    end_time: float
    trace: str  # SHA-256 over every event, to compare runs

    @property
    def honest(self) -> list[str]:
        return [e.name for e in self.endpoints if e.honest]


class SimBus:
    """Runs endpoints under a schedule until every honest one decided, or the horizon.

    Args:
        endpoints: the participants.
        schedule: the network's behaviour.
        max_events: a runaway guard; exceeded means a bug, not a slow network.
    """

    def __init__(self, endpoints: Sequence[Endpoint], schedule: Schedule, max_events: int = 400_000) -> None:
        self.endpoints = list(endpoints)
        self.by_name = {e.name: e for e in self.endpoints}
        self.schedule = schedule
        self._rng = random.Random(schedule.seed)
        self._queue: list[tuple[float, int, str, str, Any]] = []
        self._seq = 0
        self._max_events = max_events
        self._started: set[str] = set()
        self._trace = hashlib.sha256()
        self.result = SimResult(self.endpoints, {e.name: [] for e in self.endpoints}, {}, {}, Counter(), 0, 0.0, "")

    def run(self) -> SimResult:
        late = dict(self.schedule.late)
        for e in self.endpoints:
            self._push(late.get(e.name, 0.0), "start", e.name, None)
        deadline = self.schedule.heal_at + self.schedule.horizon
        events = 0
        now = 0.0
        while self._queue and not self._all_decided():
            now, _, kind, name, payload = heapq.heappop(self._queue)
            if now > deadline:
                break
            events += 1
            if events > self._max_events:
                raise RuntimeError(f"simulation exceeded {self._max_events} events at t={now:.3f}: {self.schedule!r}")
            self._trace.update(f"{now:.6f}|{kind}|{name}|".encode())
            self._dispatch(now, kind, name, payload)
        self.result.end_time = now
        self.result.trace = self._trace.hexdigest()
        self.result.rejected = _rejections(self.endpoints)
        return self.result

    def _dispatch(self, now: float, kind: str, name: str, payload: Any) -> None:
        node = self.by_name[name].node
        if kind == "start":
            self._started.add(name)
            self._push(now + self.schedule.tick, "tick", name, None)
            self._apply(now, name, node.start())
        elif kind == "deliver":
            if name in self._started:  # not yet attached: lost, as on core NATS
                self.result.delivered += 1
                self._trace.update(payload)
                self._apply(now, name, node.receive(payload))
        elif kind == "timeout":
            self._apply(now, name, node.on_timeout(payload))
        elif kind == "tick":
            self._push(now + self.schedule.tick, "tick", name, None)
            self._apply(now, name, node.rebroadcast())

    def _apply(self, now: float, name: str, fx: Effects) -> None:
        for t in fx.timeouts:
            self._push(now + t.delay, "timeout", name, t)
        if fx.decision is not None:
            self.result.decisions[name].append(fx.decision)
            self.result.decided_at.setdefault(name, now)
        for send in fx.sends:
            if send.phase == PROPOSAL:
                self._note_proposal(send.data)
            for target in self.endpoints:
                if target.name == name or (send.to is not None and send.to != target.member):
                    continue
                self._transmit(now, name, target.name, send)

    def _transmit(self, now: float, src: str, dst: str, send: Send) -> None:
        s = self.schedule
        rng = self._rng
        if now >= s.heal_at:
            self._push(now + rng.uniform(0.0, s.calm_delay), "deliver", dst, send.data)
            return
        if (
            any(p.separates(src, dst, now) for p in s.partitions)
            or any(c.drops(src, dst, send.phase, now) for c in s.cuts)
            or rng.random() < s.drop
        ):
            return
        copies = 2 if rng.random() < s.duplicate else 1
        for _ in range(copies):
            self._push(now + rng.uniform(0.0, s.max_delay), "deliver", dst, send.data)

    def _note_proposal(self, data: bytes) -> None:
        try:
            msg = decode(data)
        except MalformedMessageError:
            return
        self.result.proposed.setdefault(str(msg.digest), msg.value)

    def _push(self, at: float, kind: str, name: str, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, name, payload))

    def _all_decided(self) -> bool:
        return all(self.result.decisions[e.name] for e in self.endpoints if e.honest)


def _rejections(endpoints: Sequence[Endpoint]) -> Counter[str]:
    total: Counter[str] = Counter()
    for e in endpoints:
        rejected = getattr(e.node, "rejected", None)
        if e.honest and rejected is not None:
            total.update(rejected)
    return total

