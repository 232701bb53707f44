"""Beta reputation with a forgetting factor.

Model: each agent has positive evidence ``r`` and negative evidence ``s``; its
reputation is the mean of ``Beta(r + a, s + b)``::

    score = (r + a) / (r + s + a + b)

where ``(a, b)`` is the prior. Evidence fades: an observation made ``dt``
seconds ago counts ``forgetting ** (dt / period)`` (``forgetting`` in
``(0, 1]``; 1 keeps everything). Time is injected, never read from a clock.

Properties (property-tested):

* bounded: ``0 < score < 1`` for a positive prior;
* monotone: more positive evidence never lowers the score, more negative
  evidence never raises it;
* forgetting pulls every score back toward the prior as time passes;
* whitewashing gains nothing beyond the prior: an unknown identity — new, or
  abandoned and recreated — scores exactly the prior mean. Choose a prior no
  better than what a newcomer deserves (e.g. ``a=1, b=3``) when a fresh start
  must not beat a modest record.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.market.errors import MarketError, TimeOrderError


@dataclass(slots=True)
class _Evidence:
    positive: float
    negative: float
    at: float


class BetaReputation:
    """Per-agent Beta reputation with time-based forgetting.

    Args:
        prior_positive: ``a``, pseudo-count of successes every identity starts with.
        prior_negative: ``b``, pseudo-count of failures every identity starts with.
        forgetting: weight left to evidence after one ``period``; in ``(0, 1]``.
        period: seconds over which evidence decays by ``forgetting``.
    """

    def __init__(
        self,
        *,
        prior_positive: float = 1.0,
        prior_negative: float = 1.0,
        forgetting: float = 0.9,
        period: float = 60.0,
    ) -> None:
        if not (prior_positive > 0 and prior_negative > 0):
            raise MarketError("the Beta prior needs positive pseudo-counts")
        if not 0 < forgetting <= 1 or not period > 0:
            raise MarketError("forgetting must be in (0, 1] and period positive")
        self.prior_positive = prior_positive
        self.prior_negative = prior_negative
        self.forgetting = forgetting
        self.period = period
        self._evidence: dict[str, _Evidence] = {}

    @property
    def prior(self) -> float:
        """The score of an unknown identity."""
        return self.prior_positive / (self.prior_positive + self.prior_negative)

    def observe(self, agent: str, success: bool, now: float, weight: float = 1.0) -> None:
        """Record one outcome of ``agent`` at time ``now``.

        Raises:
            TimeOrderError: ``now`` is before this agent's last observation.
            MarketError: ``weight`` is negative.
        """
        if weight < 0:
            raise MarketError(f"evidence weight must not be negative, got {weight}")
        positive, negative = self.evidence(agent, now)
        if success:
            positive += weight
        else:
            negative += weight
        self._evidence[agent] = _Evidence(positive, negative, now)

    def evidence(self, agent: str, now: float) -> tuple[float, float]:
        """The decayed ``(positive, negative)`` evidence of ``agent`` at ``now``."""
        ev = self._evidence.get(agent)
        if ev is None:
            return 0.0, 0.0
        if now < ev.at:
            raise TimeOrderError(f"time went backwards for {agent!r}: {now} before {ev.at}")
        fade = self.forgetting ** ((now - ev.at) / self.period)
        return ev.positive * fade, ev.negative * fade

    def score(self, agent: str, now: float) -> float:
        """The expected success probability of ``agent`` at ``now``."""
        positive, negative = self.evidence(agent, now)
        a, b = self.prior_positive, self.prior_negative
        return (positive + a) / (positive + negative + a + b)

    def forget(self, agent: str) -> None:
        """Drop ``agent``'s evidence (its identity left the system)."""
        self._evidence.pop(agent, None)

    def agents(self) -> list[str]:
        return sorted(self._evidence)
