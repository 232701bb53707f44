"""Chaos runs and the history checker: nothing acknowledged may be lost.

* :class:`Workload` — publishes unique task ids, records each outcome
  (:class:`History`, :class:`PublishRecord`: acked, failed, unknown).
* :func:`check` — lost, unexpected, duplicates processed and stored, from a
  history and an :class:`Observation` (:func:`observe` reads one).
* :func:`kill_workers` — the ``kill -9`` scenario behind
  ``foundation chaos kill-workers`` (a throwaway node for it comes from
  :func:`supervisor.harness.start_node`).
* :mod:`chaos.handlers` — handlers that count their effects in ``ctx.state``.
* :data:`SCENARIOS`, :func:`run_scenario` — ``foundation chaos list|run``:
  a cluster (:class:`NetnsCluster` in :class:`Network` namespaces when it
  partitions), a node, nemeses (:mod:`chaos.nemesis`), the verdict
  (:class:`RunResult`) and its report (:mod:`chaos.report`).
* :mod:`chaos.toxiproxy` — the toxiproxy-protocol server and client.
"""

from chaos.checker import Observation, Report, check
from chaos.env import Env, open_env
from chaos.errors import ChaosError, NemesisUnavailable
from chaos.nemesis import (
    KillNats, KillSupervisor, KillWorker, LinkFault, Nemesis, Partition, PauseNats, PauseSupervisor, PauseWorker, WipeNats,
)
from chaos.netcluster import NetnsCluster
from chaos.netns import Network
from chaos.run import Progress, RunResult, Window
from chaos.scenarios import SCENARIOS, Scenario, run_scenario
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
    "ChaosError", "Env", "KillNats", "KillSupervisor", "KillWorker", "LinkFault", "Nemesis", "NemesisUnavailable",
    "NetnsCluster", "Network", "Partition", "PauseNats", "PauseSupervisor", "PauseWorker", "Progress", "RunResult", "SCENARIOS", "Scenario", "Window",
    "WipeNats", "open_env", "run_scenario",
    "ACKED", "effects_of", "next_seq", "FAILED", "History", "KillWorkersResult", "Observation",
    "PublishRecord", "Report", "ScenarioError", "UNKNOWN", "Workload", "check", "classify", "kill_workers",
    "observe", "worker_pids",
]
