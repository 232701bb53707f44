"""Scenarios: a group of n members, some Byzantine, under one schedule.

Everything is derived from the scenario's fields (keys included, from fixed
seeds), so ``simulate(scenario)`` is a pure function: the ``repr`` of a
failing scenario is its replay.

Honest member ``pK`` proposes ``"value-pK"``; Byzantine members that propose
their own value propose ``"invalid-pK"``, which :func:`validate` refuses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protocols.bft.keys import Signer, seed_from_bytes
from protocols.bft.machine import Tendermint, TimeoutPolicy
from protocols.bft.messages import PRECOMMIT, PREVOTE, Message, digest
from protocols.bft.sim.bus import Endpoint, Schedule, SimBus, SimResult
from protocols.bft.sim.byzantine import BEHAVIOURS, Context

SIM_TIMEOUTS = TimeoutPolicy(propose=1.0, prevote=1.0, precommit=1.0, increment=0.5)


def validate(value: Any) -> bool:
    """The scenarios' proposal predicate: strings not starting with ``invalid``."""
    return isinstance(value, str) and not value.startswith("invalid")


def member_ids(n: int) -> list[str]:
    return [f"p{i}" for i in range(n)]


def signer_for(member: str) -> Signer:
    """A fixed identity per member name, so runs are reproducible."""
    return Signer(member, seed_from_bytes(hashlib.sha256(f"bft-sim/{member}".encode()).digest()))


def public_keys(n: int) -> dict[str, str]:
    return {m: signer_for(m).public_key for m in member_ids(n)}


@dataclass(frozen=True)
class Scenario:
    """n members; ``byzantine`` maps member index to behaviour name (see ``BEHAVIOURS``)."""

    n: int = 4
    byzantine: tuple[tuple[int, str], ...] = ()
    schedule: Schedule = field(default_factory=Schedule)
    group: str = "g"
    instance: str = "i0"

    @property
    def coalition(self) -> frozenset[str]:
        return frozenset(f"p{i}" for i, _ in self.byzantine)


def endpoints(scenario: Scenario) -> list[Endpoint]:
    """The bus attachments of a scenario: one per honest member, one or more per Byzantine one."""
    keys = public_keys(scenario.n)
    behaviour = {f"p{i}": name for i, name in scenario.byzantine}
    foreign = _foreign_traffic(scenario, keys)
    out: list[Endpoint] = []
    for member in member_ids(scenario.n):
        signer = signer_for(member)
        if member not in behaviour:
            node = Tendermint(
                group=scenario.group, instance=scenario.instance, signer=signer, members=keys,
                proposal=f"value-{member}", validate=validate, timeouts=SIM_TIMEOUTS,
            )
            out.append(Endpoint(member, member, node, honest=True))
            continue
        ctx = Context(
            member=member, signer=signer, members=keys, group=scenario.group, instance=scenario.instance,
            proposal=f"invalid-{member}", validate=validate, timeouts=SIM_TIMEOUTS,
            coalition=scenario.coalition, foreign=foreign,
        )
        for name, node in BEHAVIOURS[behaviour[member]](ctx):
            out.append(Endpoint(name, member, node, honest=False))
    return out


def simulate(scenario: Scenario) -> SimResult:
    """Run a scenario to completion (every honest member decided) or its horizon."""
    return SimBus(endpoints(scenario), scenario.schedule).run()


def _foreign_traffic(scenario: Scenario, keys: Mapping[str, str]) -> tuple[bytes, ...]:
    # Genuine votes of every member for another instance and another group:
    # what a replaying member could have recorded earlier.
    out = []
    for member in keys:
        signer = signer_for(member)
        elsewhere = ((scenario.group, f"{scenario.instance}-old"), (f"{scenario.group}-other", scenario.instance))
        for group, instance in elsewhere:
            for kind in (PREVOTE, PRECOMMIT):
                msg = Message(kind=kind, group=group, instance=instance, round=0, sender=member,
                              digest=digest(f"value-{member}"))
                out.append(msg.signed(signer).encode())
    return tuple(out)
