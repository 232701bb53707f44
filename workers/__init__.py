"""Code that runs inside a worker process.

* :class:`Worker` — the consume loop of one pool (fetch, handle, store, ack).
* :class:`Handler` / :func:`resolve` — loading ``module:callable`` handlers.
* :class:`TaskContext` — the ``ctx`` a handler receives.
* :class:`Middleware` — lifecycle hooks around each task.
* :class:`AgentState` / :class:`StateStore` — persistent ``ctx.state``,
  applied effectively once (:mod:`workers.state`).
* :class:`DeadLetters` — tasks whose worker died on every delivery.
* :class:`Suspects` — redeliveries whose worker died: isolated retries.
* :class:`AttemptJournal` — how a task's last attempt ended.
* :class:`InFlight` — heartbeats and leases of the deliveries held.
* :func:`run_limited`, :class:`SoftTimeLimitExceeded`,
  :class:`HardTimeLimitExceeded` — per-pool time limits.
* :class:`RecyclePolicy` — ``max_tasks_per_child``, ``max_age_s``.
* :class:`MarketWorker` / :class:`Contractor` — ``dispatch = "market"``: tasks
  allocated by Contract Net among the pool's agents (:mod:`workers.market`).
* :func:`worker_main` / :class:`WorkerSpec` — the process entry point.
* :mod:`workers.exitcodes` — the named exit codes the supervisor acts on.
* :mod:`workers.examples` — example handlers.
"""

from workers.consumer import Worker
from workers.context import TaskContext
from workers.deadletter import DeadLetters, advisory_subject, delete_task
from workers.handler import Handler, HandlerImportError, Running, resolve
from workers.inflight import Delivery, InFlight
from workers.contractor import Contractor, Offer
from workers.journal import ATTEMPTS_BUCKET, EXITS_STREAM, AttemptJournal
from workers.market import MarketWorker
from workers.middleware import Middleware, Outcome, Task
from workers.process import WorkerSpec, worker_main
from workers.recycle import RecyclePolicy
from workers.state import AgentState, Applied, TaskAbandoned
from workers.statestore import StateConflictError, StateError, StateStore, StoredState, agent_key
from workers.suspects import Suspects
from workers.timelimits import HardTimeLimitExceeded, SoftTimeLimitExceeded, run_limited

__all__ = [
    "ATTEMPTS_BUCKET", "AgentState", "Applied", "AttemptJournal", "DeadLetters", "Delivery", "EXITS_STREAM",
    "Handler", "HandlerImportError", "HardTimeLimitExceeded", "InFlight", "Middleware", "Outcome",
    "RecyclePolicy", "Running", "SoftTimeLimitExceeded", "StateConflictError", "StateError", "StateStore", "StoredState",
    "Suspects", "Task", "TaskAbandoned", "TaskContext", "Worker", "WorkerSpec", "advisory_subject", "agent_key",
    "delete_task", "resolve", "run_limited", "worker_main",
    "Contractor", "MarketWorker", "Offer",
]
