"""How Contract Net proposals are evaluated, and how participants price them.

The initiator ranks on-time proposals by a *scorer*, highest score first;
ties go to the smaller agent id so the choice does not depend on arrival
order. A participant prices its proposal from its own cost and load; the
initiator adds what the participant cannot vouch for itself — reputation.

With a reputation ``rho`` read as the probability that the agent completes
the task, ``price / rho`` is the expected spend per completed task when a
failed task is re-offered at a similar price; the reputation scorer ranks by
its negative, so a cheap but unreliable agent does not beat a reliable one
by a small discount, and a newcomer (at the prior) must underbid proven
agents to win.
"""

from __future__ import annotations

from collections.abc import Callable

from protocols.market.errors import MarketError
from protocols.market.messages import Proposal

Scorer = Callable[[Proposal], float]
"""Maps a proposal to a score; higher wins."""


def lowest_price(proposal: Proposal) -> float:
    """Score by price alone: the cheapest proposal wins."""
    return -proposal.price


def reputation_weighted(reputation: Callable[[str], float], *, floor: float = 0.01) -> Scorer:
    """Score by expected price per success, ``-price / max(floor, reputation(sender))``.

    Args:
        reputation: agent id -> success probability in ``[0, 1]`` (e.g.
            ``lambda a: beta.score(a, loop.time())`` or ``eigentrust.normalized().get``).
        floor: the least reputation used, so an agent at 0 gets a finite score.

    Raises:
        MarketError: ``floor`` is not in ``(0, 1]``.
    """
    if not 0 < floor <= 1:
        raise MarketError(f"floor must be in (0, 1], got {floor}")

    def score(proposal: Proposal) -> float:
        rho = min(1.0, max(floor, reputation(proposal.sender)))
        return -proposal.price / rho

    return score


def load_price(base_cost: float, load: int, capacity: int) -> float:
    """A participant's price: its cost, raised as its slots fill up.

    ``base_cost * (1 + load / free_slots)`` grows slowly while slots are free
    and without bound as the last one is taken, steering work to idle agents.

    Args:
        base_cost: the agent's cost of the task when idle (> 0).
        load: tasks in progress.
        capacity: tasks it can run at once.

    Raises:
        MarketError: ``load`` is not below ``capacity`` (the agent should refuse).
    """
    if load >= capacity:
        raise MarketError(f"no free slot (load {load} of {capacity}); refuse the cfp instead")
    return base_cost * (1 + load / (capacity - load))
