"""The result body and dead-letter headers of the task contract (DESIGN.md §3)."""

from __future__ import annotations

from typing import Any

from broker import subjects
from broker.codec import one_line


def result_body(
    *,
    task_id: str,
    pool: str,
    worker: str,
    attempt: int,
    duration_ms: float,
    result: Any = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The JSON body published on ``results.<pool>``.

    ``ok`` is true with ``result`` on success; false with ``error`` for a
    dead-lettered task.
    """
    body: dict[str, Any] = {
        "task_id": task_id,
        "pool": pool,
        "ok": error is None,
        "worker": worker,
        "attempt": attempt,
        "duration_ms": round(duration_ms, 3),
    }
    if error is None:
        body["result"] = result
    else:
        body["error"] = error
    return body


def error_line(exc: BaseException) -> str:
    """``"ValueError: bad input"`` on one line, for headers and result bodies."""
    text = str(exc)
    return one_line(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def dead_letter_headers(*, task_id: str, pool: str, error: str, attempts: int) -> dict[str, str]:
    """Headers of a ``dlq.<pool>`` message. The body is the task's original body."""
    return {
        subjects.MSG_ID: task_id,
        subjects.TASK_ID: task_id,
        subjects.POOL: pool,
        subjects.ERROR: one_line(error),
        subjects.ATTEMPTS: str(attempts),
    }
