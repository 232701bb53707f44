"""Code that runs inside a worker process.

* :class:`Worker` — the consume loop of one pool: fetch, run the chain, settle.
* :class:`Delivery` / :class:`Outcome` — one delivery, and how it ended.
* :class:`Middleware` / :func:`chain` — the middleware chain (its order is in
  :mod:`workers.middleware`): :class:`MetricsMiddleware`, :class:`Settling`,
  :class:`DeadLettering`,
  :class:`SuspectIsolation`, :class:`Gate`, :class:`StateTransaction`,
  :class:`TimeLimits`, then :class:`HandlerCall` or :class:`MarketStep`.
* :class:`Handler` / :func:`resolve` — loading ``module:callable`` handlers.
* :class:`TaskContext` — the ``ctx`` a handler receives.
* :class:`AgentState` / :class:`StateStore` — persistent ``ctx.state``,
  applied effectively once (:mod:`workers.state`).
* :class:`DeadLetters` — tasks whose worker died on every delivery.
* :class:`SuspectIsolation` — redeliveries whose worker died: isolated retries.
* :class:`AttemptJournal` — how a task's last attempt ended.
* :class:`InFlight` — heartbeats and leases of the deliveries held.
* :func:`run_limited`, :class:`SoftTimeLimitExceeded`,
  :class:`HardTimeLimitExceeded` — per-pool time limits.
* :class:`RecyclePolicy` — ``max_tasks_per_child``, ``max_age_s``.
* :class:`MarketStep` / :class:`Contractor` — ``dispatch = "market"``: tasks
  allocated by Contract Net among the pool's agents (:mod:`workers.market`).
* :func:`worker_main` / :class:`WorkerSpec` — the process entry point.
* :mod:`workers.exitcodes` — the named exit codes the supervisor acts on.
* :mod:`workers.examples` — example handlers.
"""

from workers.consumer import Worker
from workers.context import TaskContext
from workers.contractor import Contractor, Offer
from workers.deadletter import DeadLetters, advisory_subject, delete_task
from workers.delivery import Delivery, Outcome, Task
from workers.handler import Handler, HandlerCall, HandlerImportError, Running, resolve
from workers.inflight import InFlight
from workers.journal import ATTEMPTS_BUCKET, EXITS_STREAM, AttemptJournal
from workers.market import MarketStep, market_step
from workers.middleware import Gate, Middleware, chain
from workers.process import WorkerSpec, worker_main
from workers.recycle import RecyclePolicy
from workers.retries import DeadLettering
from workers.settling import Settling
from workers.state import AgentState, Applied, TaskAbandoned
from workers.stateful import StateTransaction
from workers.statestore import StateConflictError, StateError, StateStore, StoredState, agent_key
from workers.suspects import SuspectIsolation
from workers.timelimits import HardTimeLimitExceeded, SoftTimeLimitExceeded, TimeLimits, run_limited

__all__ = [
    "ATTEMPTS_BUCKET", "AgentState", "Applied", "AttemptJournal", "Contractor", "DeadLettering", "DeadLetters",
    "Delivery", "EXITS_STREAM", "Gate", "Handler", "HandlerCall", "HandlerImportError", "HardTimeLimitExceeded",
    "InFlight", "MarketStep", "Middleware", "Offer", "Outcome", "RecyclePolicy", "Running", "Settling",
    "SoftTimeLimitExceeded",
    "StateConflictError", "StateError", "StateStore", "StateTransaction", "StoredState", "SuspectIsolation", "Task",
    "TaskAbandoned", "TaskContext", "TimeLimits", "Worker", "WorkerSpec", "advisory_subject", "agent_key", "chain",
    "delete_task", "market_step", "resolve", "run_limited", "worker_main",
]
