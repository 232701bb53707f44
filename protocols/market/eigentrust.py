"""EigenTrust global reputation with pre-trusted agents.

Model (Kamvar, Schlosser, Garcia-Molina):

* ``s_ij`` = satisfactory minus unsatisfactory interactions of ``i`` with
  ``j`` (self-ratings are ignored).
* Local trust ``c_ij = max(s_ij, 0) / sum_k max(s_ik, 0)``; an agent that
  trusts nobody trusts the pre-trusted set: ``c_i = p``, where ``p`` is
  uniform over the pre-trusted agents.
* Global trust is the fixed point of ``t = (1 - alpha) C^T t + alpha p``,
  computed by power iteration from ``t = p``; ``sum t = 1``.

Why a colluding clique stays near zero: trust only enters the clique along
positive ratings from outside it. Members rating each other highly just
recirculate what entered, and every step returns ``alpha`` of all trust to
the pre-trusted agents. A clique nobody honest vouches for gets exactly 0;
one honest rating leaks at most that rater's share into it (tested).
"""

from __future__ import annotations

from collections.abc import Iterable

from protocols.market.errors import MarketError


class EigenTrust:
    """Accumulates pairwise ratings and computes global trust.

    Args:
        pretrusted: agents trusted a priori (at least one).
        alpha: weight of the pre-trusted distribution in each step, in ``(0, 1)``.
        tolerance: stop when the L1 change of ``t`` falls below this.
        max_iterations: stop after this many steps regardless.
    """

    def __init__(
        self,
        pretrusted: Iterable[str],
        *,
        alpha: float = 0.15,
        tolerance: float = 1e-10,
        max_iterations: int = 1000,
    ) -> None:
        self.pretrusted = frozenset(pretrusted)
        if not self.pretrusted:
            raise MarketError("EigenTrust needs at least one pre-trusted agent")
        if not 0 < alpha < 1:
            raise MarketError(f"alpha must be in (0, 1), got {alpha}")
        self.alpha = alpha
        self.tolerance = tolerance
        self.max_iterations = max_iterations
        self._ratings: dict[str, dict[str, float]] = {}
        self._peers: set[str] = set(self.pretrusted)

    def rate(self, rater: str, ratee: str, satisfied: bool, weight: float = 1.0) -> None:
        """Record one interaction of ``rater`` with ``ratee``."""
        self._peers.update((rater, ratee))
        if rater == ratee:
            return  # self-ratings would let anyone vouch for itself
        row = self._ratings.setdefault(rater, {})
        row[ratee] = row.get(ratee, 0.0) + (weight if satisfied else -weight)

    def local_trust(self, rater: str) -> dict[str, float]:
        """Normalised local trust ``c_rater,*`` (the pre-trusted distribution if empty)."""
        row = {j: v for j, v in self._ratings.get(rater, {}).items() if v > 0}
        total = sum(row.values())
        if total <= 0:
            share = 1.0 / len(self.pretrusted)
            return {j: share for j in self.pretrusted}
        return {j: v / total for j, v in row.items()}

    def scores(self) -> dict[str, float]:
        """Global trust of every known agent; values sum to 1."""
        peers = sorted(self._peers)
        p = {j: (1.0 / len(self.pretrusted) if j in self.pretrusted else 0.0) for j in peers}
        rows = {i: self.local_trust(i) for i in peers}
        t = dict(p)
        for _ in range(self.max_iterations):
            nxt = {j: self.alpha * p[j] for j in peers}
            for i, ti in t.items():
                if ti:
                    weight = (1 - self.alpha) * ti
                    for j, cij in rows[i].items():
                        nxt[j] += weight * cij
            change = sum(abs(nxt[j] - t[j]) for j in peers)
            t = nxt
            if change < self.tolerance:
                break
        return t

    def normalized(self) -> dict[str, float]:
        """Global trust scaled so the most trusted agent has 1 (for bid scoring)."""
        t = self.scores()
        top = max(t.values())
        return {j: v / top for j, v in t.items()}
