"""The history of a workload: every task id published and what the publish said.

The method of Jepsen's NATS analysis: a writer uses unique ids, and records
the outcome of each publish as seen by the client:

* ``acked`` — the stream acknowledged it: it must get an outcome, or it is lost;
* ``failed`` — the publish certainly did not reach the stream (raised before
  sending, no responders, rejected by the server);
* ``unknown`` — no answer (timeout, connection lost mid-request): it may or may
  not be stored, so finding it later is fine and missing it is not a loss.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

ACKED = "acked"
FAILED = "failed"
UNKNOWN = "unknown"
OUTCOMES = (ACKED, FAILED, UNKNOWN)
_RANK = {FAILED: 0, UNKNOWN: 1, ACKED: 2}  # what a retried publish's record keeps


@dataclass(frozen=True)
class PublishRecord:
    """One publish: the task id and what the client learned."""

    task_id: str
    outcome: str
    error: str = ""
    seq: int = 0  # stream sequence, when acked

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"publish outcome must be one of {OUTCOMES}, got {self.outcome!r}")


class History:
    """Publish records by task id, in publish order."""

    def __init__(self, records: list[PublishRecord] | None = None) -> None:
        self.records: dict[str, PublishRecord] = {}
        for r in records or []:
            self.add(r)

    def add(self, record: PublishRecord) -> None:
        """Add a record; an id already recorded keeps its best outcome (acked > unknown > failed)."""
        old = self.records.get(record.task_id)
        if old is None or _RANK[record.outcome] > _RANK[old.outcome]:
            self.records[record.task_id] = record

    def ids(self, outcome: str | None = None) -> set[str]:
        """Task ids attempted (or only those with ``outcome``)."""
        return {t for t, r in self.records.items() if outcome is None or r.outcome == outcome}

    def counts(self) -> dict[str, int]:
        c = Counter(r.outcome for r in self.records.values())
        return {o: c.get(o, 0) for o in OUTCOMES}

    def __len__(self) -> int:
        return len(self.records)

    def dump(self, path: str | Path) -> None:
        """Write one JSON record per line."""
        with open(path, "w") as f:
            for r in self.records.values():
                f.write(json.dumps(asdict(r)) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "History":
        with open(path) as f:
            return cls([PublishRecord(**json.loads(line)) for line in f if line.strip()])
