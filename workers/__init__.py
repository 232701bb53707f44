"""Code that runs inside a worker process.

* :class:`Worker` — the consume loop of one pool (fetch, handle, store, ack).
* :class:`Handler` / :func:`resolve` — loading ``module:callable`` handlers.
* :class:`TaskContext` — the ``ctx`` a handler receives.
* :class:`Middleware` — lifecycle hooks around each task.
* :func:`worker_main` / :class:`WorkerSpec` — the process entry point.
* :mod:`workers.exitcodes` — the named exit codes the supervisor acts on.
* :mod:`workers.examples` — example handlers.
"""

from workers.consumer import Worker
from workers.context import TaskContext
from workers.handler import Handler, HandlerImportError, resolve
from workers.middleware import Middleware, Outcome, Task
from workers.process import WorkerSpec, worker_main

__all__ = [
    "Handler", "HandlerImportError", "Middleware", "Outcome", "Task", "TaskContext", "Worker",
    "WorkerSpec", "resolve", "worker_main",
]
