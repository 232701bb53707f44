"""Who may approve a change: the pluggable gate between a proposal and its application.

A change is approved by an :class:`Approval`. The default,
:class:`ConsensusApproval`, runs a consensus round among the stakeholders
(``coord.consensus.variables.<session>.*``); stakeholders answer with a
:func:`stakeholder` voter that re-validates the change against its own copy
of the space and may apply its own check. :class:`AllOf` chains gates, so a
Byzantine agreement decision (or any other) can be required as well.

Invariants (tests/protocols/test_variables.py):

* A change that any gate refuses is never applied; the refusing gate's
  reason is reported.
* A stakeholder votes no on a value outside its own space, with the
  validation message as its reason.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from broker import Connection

from protocols.consensus import NO, YES, Ballot, Finder, Proposal, Quorum, Voter, propose
from protocols.variables.space import ParameterSpace, VariableError, VariableValidationError

VARIABLES_GROUP = "variables"


@dataclass(frozen=True)
class ChangeRequest:
    """A validated change, as the gates see it."""

    name: str
    value: Any
    previous: Any
    version: int  # the version the change applies on top of
    proposer: str = ""
    reason: str = ""
    session: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> ChangeRequest:
        return cls(**{k: body[k] for k in cls.__dataclass_fields__ if k in body})


@dataclass(frozen=True)
class Verdict:
    """A gate's answer; ``evidence`` is stored with the change (e.g. the decision)."""

    approved: bool
    reason: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)


class Approval(Protocol):
    """A gate a change must pass before it is applied."""

    async def approve(self, change: ChangeRequest) -> Verdict: ...


class ChangeRejectedError(VariableError):
    """A gate refused the change; ``verdict`` says which and why."""

    def __init__(self, change: ChangeRequest, verdict: Verdict) -> None:
        self.change = change
        self.verdict = verdict
        super().__init__(f"change of {change.name!r} to {change.value!r} was not approved: {verdict.reason}")


class ConsensusApproval:
    """Approve by a consensus round among the stakeholders.

    Args:
        nc: the NATS connection.
        stakeholders: who votes; or give ``capability`` and ``finder``.
        capability: find stakeholders with ``await finder(capability)``.
        finder: the participant lookup (e.g. the registry's).
        quorum: the decision rule; majority when omitted.
        deadline: seconds to collect votes.
        group: the consensus group stakeholders listen on.
    """

    def __init__(
        self,
        nc: Connection,
        *,
        stakeholders: Sequence[str] | None = None,
        capability: str | None = None,
        finder: Finder | None = None,
        quorum: Quorum | None = None,
        deadline: float = 2.0,
        group: str = VARIABLES_GROUP,
    ) -> None:
        if stakeholders is None and (capability is None or finder is None):
            raise VariableError("give stakeholders, or a capability and a finder to look them up")
        self.nc = nc
        self.stakeholders = stakeholders
        self.capability = capability
        self.finder = finder
        self.quorum = quorum
        self.deadline = deadline
        self.group = group

    async def approve(self, change: ChangeRequest) -> Verdict:
        decision = await propose(
            self.nc, self.group, change.to_dict(), participants=self.stakeholders, capability=self.capability,
            finder=self.finder, quorum=self.quorum, deadline=self.deadline, session=change.session or None,
            proposer=change.proposer,
        )
        reason = f"consensus {decision.outcome}: yes {decision.yes_weight:g} of {decision.total_weight:g}"
        if decision.no:
            reason += "; no: " + ", ".join(f"{v} ({decision.reasons.get(v, '')})" for v in decision.no)
        return Verdict(decision.accepted, reason, {"consensus": decision.to_dict()})


class AllOf:
    """Every gate must approve, in order; the first refusal stops the chain."""

    def __init__(self, *gates: Approval) -> None:
        self.gates = gates

    async def approve(self, change: ChangeRequest) -> Verdict:
        evidence: dict[str, Any] = {}
        reasons = []
        for gate in self.gates:
            verdict = await gate.approve(change)
            evidence.update(verdict.evidence)
            reasons.append(verdict.reason)
            if not verdict.approved:
                return Verdict(False, verdict.reason, evidence)
        return Verdict(True, "; ".join(r for r in reasons if r), evidence)


Check = Callable[[ChangeRequest], "Awaitable[bool | Ballot] | bool | Ballot"]


def stakeholder(
    nc: Connection, space: ParameterSpace, voter_id: str, *, check: Check | None = None, group: str = VARIABLES_GROUP
) -> Voter:
    """A voter for variable changes: no on values outside ``space``, else ``check`` (yes by default).

    Start it with ``async with stakeholder(...)``.
    """

    async def decide(proposal: Proposal) -> Ballot:
        try:
            change = ChangeRequest.from_dict(proposal.value)
            space.validate(change.name, change.value)
        except (VariableValidationError, TypeError, AttributeError) as exc:
            return Ballot(NO, str(exc))
        if check is None:
            return Ballot(YES)
        answer = check(change)
        if inspect.isawaitable(answer):
            answer = await answer
        if isinstance(answer, Ballot):
            return answer
        return Ballot(YES if answer else NO, "" if answer else "refused by the stakeholder's check")

    return Voter(nc, group, voter_id, decide)
