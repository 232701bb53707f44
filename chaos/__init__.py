"""Chaos runs and the history checker: nothing acknowledged may be lost.

* :class:`Workload` — publishes unique task ids, records each outcome
  (:class:`History`, :class:`PublishRecord`: acked, failed, unknown).
* :func:`check` — lost, unexpected, duplicates processed and stored, from a
  history and an :class:`Observation` (:func:`observe` reads one).
* :func:`kill_workers` — the ``kill -9`` scenario behind
  ``foundation chaos kill-workers`` (a throwaway node for it comes from
  :func:`supervisor.harness.start_node`).
* :mod:`chaos.handlers` — handlers that count their effects in ``ctx.state``.
"""

from chaos.checker import Observation, Report, check
from chaos.history import ACKED, FAILED, UNKNOWN, History, PublishRecord
from chaos.kill_workers import (
    KillWorkersResult,
    ScenarioError,
    kill_workers,
    worker_pids,
)
from chaos.observe import effects_of, next_seq, observe
from chaos.workload import Workload, classify

__all__ = [
    "ACKED", "effects_of", "next_seq", "FAILED", "History", "KillWorkersResult", "Observation",
    "PublishRecord", "Report", "ScenarioError", "UNKNOWN", "Workload", "check", "classify", "kill_workers",
    "observe", "worker_pids",
]
