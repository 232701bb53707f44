"""The supervision tree: OS processes kept alive the way OTP keeps processes.

Contract
========

Children
    A child is a forked worker, an external command (nats-server), or a
    nested supervisor. Each has a stable id; a worker's id is its slot,
    ``<pool>.<n>``, kept across restarts while its pid changes. Child spec
    fields and defaults: ``restart = "permanent"``, ``shutdown = 10.0``
    seconds, ``start_timeout = 30.0`` seconds.

Start order
    Children start one at a time in list order; ``start()`` of a child returns
    only once it is ready (a worker has bound to its consumer; nats-server
    answers ``/healthz``). If one fails to start, those already started are
    stopped in reverse order and the supervisor's own start fails.

Stop order
    Reverse of start order. Stopping a child: SIGTERM to the child, wait up to
    its ``shutdown`` seconds, then SIGKILL to its whole process group. A
    worker that gets SIGTERM stops fetching, finishes its in-flight tasks and
    exits 0.

Restart types
    ``permanent``: always restarted. ``transient``: restarted only after an
    abnormal exit (non-zero code or a signal). ``temporary``: never
    restarted, and removed from the supervisor when it ends — also when a
    sibling's restart takes it down (as in OTP).

Strategies (what is restarted when a child ends and must be restarted)
    ``one_for_one``: that child only. ``one_for_all``: every other child is
    stopped (reverse order), then all are started (in order).
    ``rest_for_one``: the children started after it are stopped (reverse
    order), then it and they are started (in order). Only an exit the
    supervisor did not cause counts: children it stops itself (a strategy,
    a scale-down, a drain, its own stop) are not "exits".

Intensity
    Every restart is counted, once per exit whatever the strategy restarts.
    More than ``max_restarts`` restarts within ``max_seconds`` makes the
    supervisor give up: it stops all its children in reverse start order and
    ends with :data:`EXIT_ESCALATED`; its parent then treats that as the
    supervisor's own abnormal exit. The root giving up makes ``foundation
    up`` exit with code 3, so systemd restarts the node. A restart that fails
    to start counts as one more. Exceptions, all deliberate: a worker
    exiting with ``EXIT_RECYCLE`` (it asked to be replaced: task count, age)
    and a child the supervisor *replaces* (a quota breach: SIGTERM, drain,
    fresh process — restarted whatever its restart type, unless temporary)
    are not counted; a child it has to *kill* at once (RSS far over quota)
    is, since it failed; a worker whose handler cannot be imported
    (``EXIT_HANDLER_IMPORT``) is not retried at all: restarting cannot fix
    it, so the supervisor escalates at once with the import error.

Pools
    A pool is a ``one_for_one`` supervisor of identical slots with its own
    intensity. Like OTP's ``simple_one_for_one`` its workers are stopped all
    at once (stop, escalation, scale-down, drain): they are independent, and
    one after another a stop would take size × shutdown. A drained pool
    keeps its slots stopped until resumed (:mod:`supervisor.pool`).

Resources
    Per-pool quotas (RSS, CPU over a window, open fds) are sampled by the
    supervisor with psutil every 50 ms, during tasks too; a breach replaces
    the worker gracefully, RSS past 1.5 × the limit kills it at once
    (:mod:`supervisor.quota`).

Process safety
    Workers are forked from a fork server (a fresh interpreter that
    preloaded the handler modules), never from the supervisor, which runs
    threads and an event loop. The fork server dies with the supervisor and
    every child dies with the fork server (``PR_SET_PDEATHSIG``), so a
    ``kill -9`` of the supervisor leaves no orphan.

The tree of a node (``foundation up``)::

    root (rest_for_one, [supervisor] max_restarts/max_seconds)
      ├─ nats-server        only when nats.url is empty
      ├─ node-services      the node's connection, streams, control service,
      │                     registry, quota candidates, variables
      ├─ pool:<name>        one_for_one, the pool's max_restarts/max_seconds
      │    ├─ <name>.0
      │    └─ <name>.1 …
      └─ …

Around the tree (:mod:`supervisor.node`): the ``nats.store_dir`` lock
(:mod:`supervisor.storelock`), lifecycle events on
``foundation.events.<node>.<kind>`` (:mod:`supervisor.events`), the control
service (:mod:`supervisor.services`, :mod:`supervisor.control`,
:mod:`supervisor.endpoints`), autoscaling
(:mod:`supervisor.autoscale`), systemd notify and watchdog
(:mod:`supervisor.systemd`), and ``/metrics`` (:mod:`supervisor.metrics`).

Tests, chaos runs and benchmarks run throwaway nodes with
:mod:`supervisor.harness` (:func:`start_node`, :class:`NodeProcess`).
"""

from supervisor.children import ChildStartError, ExitInfo, ProcessChild
from supervisor.harness import NodeFailedError, NodeProcess, start_node, write_config
from supervisor.pool import PoolDrainedError, PoolSupervisor
from supervisor.storelock import StoreLockedError, lock_store
from supervisor.tree import (
    CAUSES,
    EXIT_ESCALATED,
    EXIT_START_FAILED,
    STRATEGIES,
    IntensityExceededError,
    Supervisor,
)

__all__ = [
    "CAUSES", "EXIT_ESCALATED", "EXIT_START_FAILED", "STRATEGIES", "ChildStartError", "ExitInfo",
    "IntensityExceededError", "NodeFailedError", "NodeProcess", "PoolDrainedError", "PoolSupervisor", "ProcessChild",
    "StoreLockedError", "Supervisor", "lock_store", "start_node", "write_config",
]
