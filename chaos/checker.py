"""The history checker: what the system did against what it was told.

Inputs: the publish :class:`~chaos.history.History`, and an
:class:`Observation` of what is stored once the faults have healed and the
pool has drained — every message on ``results.<pool>`` and ``dlq.<pool>``
(duplicates included), and the effects the handler applied, counted per
agent through a side effect it keeps in ``ctx.state``.

Anomalies, by task id:

* **lost** = acked − (results ∪ dead-lettered): acknowledged to the
  publisher, then never seen again. The verdict is valid only when none is.
* **unexpected** = (results ∪ dead-lettered) − attempted: an outcome for a
  task nobody published.
* **duplicates stored**: result (or dead-letter) messages beyond the first
  for one task id — the streams deduplicate on ``Nats-Msg-Id`` only within
  their duplicate window.
* **duplicates processed**: effects applied more often than tasks were
  completed, per agent: Σ max(0, effects − results naming that agent).
* **missing effects**: results naming an agent beyond the effects it kept —
  an acknowledged effect that was lost.
* **conflicting**: a task with both an ``ok`` result and a dead letter.

Valid means: nothing lost, nothing unexpected, and (when effects are
counted) no effect applied twice or lost.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from chaos.history import ACKED, FAILED, UNKNOWN, History


@dataclass
class Observation:
    """What the streams and agent states hold after a run.

    Attributes:
        results: ``(task_id, body)`` of every message on ``results.<pool>``.
        dead: task ids of every message on ``dlq.<pool>``.
        effects: tasks applied per agent (the slot id results name as
            ``worker``), or ``None`` when the handler keeps no count.
    """

    results: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    effects: dict[str, int] | None = None


@dataclass
class Report:
    """The checker's findings (see the module docstring for each term)."""

    attempted: int
    acked: int
    failed: int
    unknown: int
    completed: int  # distinct task ids with an ok result
    redelivered: int  # of those, completed on a later attempt than the first
    dead_lettered: int  # distinct task ids in the DLQ
    recovered: int  # failed/unknown publishes that got an outcome anyway
    lost: list[str]
    unexpected: list[str]
    duplicates_stored: int
    conflicting: list[str]
    duplicates_processed: int | None
    missing_effects: int | None
    per_agent: dict[str, tuple[int, int]]  # agent -> (effects kept, results naming it)

    @property
    def valid(self) -> bool:
        return (
            not self.lost
            and not self.unexpected
            and not self.duplicates_processed
            and not self.missing_effects
        )

    def lines(self) -> list[str]:
        """The report as printable lines."""
        def some(ids: list[str]) -> str:
            return f" ({', '.join(ids[:5])}{', …' if len(ids) > 5 else ''})" if ids else ""

        out = [
            f"tasks: {self.attempted} published: {self.acked} acked, {self.failed} failed, {self.unknown} unknown",
            f"outcomes: {self.completed} completed ({self.redelivered} after a redelivery), "
            f"{self.dead_lettered} dead-lettered, "
            f"{self.recovered} of the failed/unknown publishes found",
            f"lost: {len(self.lost)}{some(self.lost)}",
            f"unexpected: {len(self.unexpected)}{some(self.unexpected)}",
            f"duplicates processed: {'not counted' if self.duplicates_processed is None else self.duplicates_processed}",
            f"duplicates stored: {self.duplicates_stored}",
        ]
        if self.missing_effects:
            out.append(f"missing effects: {self.missing_effects}")
        if self.conflicting:
            out.append(f"conflicting outcomes: {len(self.conflicting)}{some(self.conflicting)}")
        out.append(f"verdict: {'valid' if self.valid else 'INVALID'}")
        return out


def check(history: History, seen: Observation) -> Report:
    """Compare a history with what was stored; pure, no I/O."""
    attempted = history.ids()
    acked = history.ids(ACKED)
    result_count = Counter(task_id for task_id, _ in seen.results)
    dead_count = Counter(seen.dead)
    ok: dict[str, str] = {}  # task id -> worker of its first ok result
    redelivered = 0
    for task_id, body in seen.results:
        if body.get("ok") and task_id not in ok:
            ok[task_id] = str(body.get("worker", ""))
            redelivered += int(body.get("attempt") or 1) > 1
    outcome_ids = set(result_count) | set(dead_count)
    duplicates = sum(c - 1 for c in result_count.values()) + sum(c - 1 for c in dead_count.values())
    per_agent: dict[str, tuple[int, int]] = {}
    dup_processed = missing = None
    if seen.effects is not None:
        completed_by = Counter(ok.values())
        agents = set(completed_by) | set(seen.effects)
        per_agent = {a: (seen.effects.get(a, 0), completed_by.get(a, 0)) for a in sorted(agents)}
        dup_processed = sum(max(0, e - c) for e, c in per_agent.values())
        missing = sum(max(0, c - e) for e, c in per_agent.values())
    return Report(
        attempted=len(attempted),
        acked=len(acked),
        failed=len(history.ids(FAILED)),
        unknown=len(history.ids(UNKNOWN)),
        completed=len(ok),
        redelivered=redelivered,
        dead_lettered=len(dead_count),
        recovered=len((attempted - acked) & outcome_ids),
        lost=sorted(acked - outcome_ids),
        unexpected=sorted(outcome_ids - attempted),
        duplicates_stored=duplicates,
        conflicting=sorted(set(ok) & set(dead_count)),
        duplicates_processed=dup_processed,
        missing_effects=missing,
        per_agent=per_agent,
    )
