"""The checker itself, fed histories with known anomalies: it must report each."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos import ACKED, FAILED, UNKNOWN, History, Observation, PublishRecord, check


def ok(task_id: str, worker: str = "p.0") -> tuple[str, dict]:
    return task_id, {"task_id": task_id, "ok": True, "worker": worker, "result": None}


def history(acked: int = 5, failed: tuple[str, ...] = (), unknown: tuple[str, ...] = ()) -> History:
    h = History([PublishRecord(f"t{i}", ACKED, seq=i + 1) for i in range(acked)])
    for t in failed:
        h.add(PublishRecord(t, FAILED, error="NoRespondersError"))
    for t in unknown:
        h.add(PublishRecord(t, UNKNOWN, error="TimeoutError"))
    return h


def test_clean_run_is_valid() -> None:
    seen = Observation(results=[ok(f"t{i}", f"p.{i % 2}") for i in range(5)], effects={"p.0": 3, "p.1": 2})
    report = check(history(), seen)
    assert report.valid
    assert (report.lost, report.unexpected, report.duplicates_stored) == ([], [], 0)
    assert report.duplicates_processed == 0 and report.missing_effects == 0
    assert report.per_agent == {"p.0": (3, 3), "p.1": (2, 2)}
    assert report.lines()[-1] == "verdict: valid"


def test_a_lost_task_is_reported_and_invalidates() -> None:
    seen = Observation(results=[ok(f"t{i}") for i in (0, 1, 3, 4)], effects={"p.0": 4})
    report = check(history(), seen)
    assert report.lost == ["t2"]
    assert not report.valid
    assert "lost: 1 (t2)" in report.lines()
    assert report.lines()[-1] == "verdict: INVALID"


def test_dead_lettered_tasks_are_not_lost() -> None:
    seen = Observation(results=[ok(f"t{i}") for i in range(4)], dead=["t4"], effects={"p.0": 4})
    report = check(history(), seen)
    assert report.lost == [] and report.dead_lettered == 1 and report.valid


def test_an_unexpected_outcome_is_reported() -> None:
    seen = Observation(results=[ok(f"t{i}") for i in range(5)] + [ok("phantom")], effects={"p.0": 6})
    report = check(history(), seen)
    assert report.unexpected == ["phantom"]
    assert not report.valid


def test_a_duplicate_effect_is_counted_per_agent() -> None:
    # p.1 applied t3 too, but t3's stored result names p.0.
    seen = Observation(results=[ok(f"t{i}", "p.0") for i in range(5)], effects={"p.0": 5, "p.1": 1})
    report = check(history(), seen)
    assert report.duplicates_processed == 1
    assert report.per_agent["p.1"] == (1, 0)
    assert not report.valid
    assert "duplicates processed: 1" in report.lines()


def test_a_lost_effect_is_reported() -> None:
    seen = Observation(results=[ok(f"t{i}") for i in range(5)], effects={"p.0": 4})
    report = check(history(), seen)
    assert report.missing_effects == 1 and report.duplicates_processed == 0
    assert not report.valid


def test_duplicates_stored_and_conflicts_are_reported() -> None:
    results = [ok(f"t{i}") for i in range(5)] + [ok("t1"), ok("t1")]
    seen = Observation(results=results, dead=["t2", "t3", "t3"], effects={"p.0": 5})
    report = check(history(), seen)
    assert report.duplicates_stored == 3  # two extra results of t1, one extra dead letter of t3
    assert report.conflicting == ["t2", "t3"]
    assert report.valid  # stored twice is reported, but nothing was lost or applied twice


def test_unknown_and_failed_publishes_may_or_may_not_arrive() -> None:
    h = history(acked=2, failed=("f1",), unknown=("u1", "u2"))
    seen = Observation(results=[ok("t0"), ok("t1"), ok("u1")], effects=None)
    report = check(h, seen)
    assert (report.acked, report.failed, report.unknown) == (2, 1, 2)
    assert report.recovered == 1 and report.lost == [] and report.valid
    assert report.duplicates_processed is None
    assert "duplicates processed: not counted" in report.lines()


def test_history_keeps_the_best_outcome_of_a_retried_publish(tmp_path: Path) -> None:
    h = History()
    h.add(PublishRecord("a", UNKNOWN))
    h.add(PublishRecord("a", ACKED, seq=7))
    h.add(PublishRecord("a", FAILED))
    h.add(PublishRecord("b", FAILED))
    h.add(PublishRecord("b", UNKNOWN))
    assert h.records["a"].outcome == ACKED and h.records["b"].outcome == UNKNOWN
    h.dump(tmp_path / "h.jsonl")
    assert History.load(tmp_path / "h.jsonl").records == h.records
    with pytest.raises(ValueError, match="publish outcome must be one of"):
        PublishRecord("c", "maybe")
