"""The control endpoints of a node: what ``foundation.control.<node>.*`` do.

========  ===============================  =====================================
endpoint  request                          reply
========  ===============================  =====================================
status    ``{}``                           node, nats, uptime, max_workers,
                                           pools (size, running, drained,
                                           bounds, workers with pid, RSS,
                                           uptime; counters; consumer lag;
                                           handler-time histogram)
scale     ``{"pool", "size"}``             ``{"pool", "size", "removed": {slot:
                                           how}}`` — scaling down drains the
                                           removed workers first
restart   ``{"pool"}`` or ``{"slot"}``     ``{"restarted": [slots]}`` — one at
                                           a time, each drained first (rolling)
drain     ``{"pool"}`` or ``{}`` (node)    ``{"drained": {pool: {slot: how}}}``
resume    ``{"pool"}`` or ``{}`` (node)    ``{"resumed": {pool: [slots]}}``
propose   ``{"name", "value", "reason",    ``{"name", "value", "version"}`` — the
          "proposer", "deadline"}``        stakeholders vote; the node writes it
========  ===============================  =====================================

**Scale bounds**: a pool's size stays within ``1 … max`` where ``max`` is the
pool's ``max_size`` when set, else what the node-wide
``supervisor.max_workers`` leaves after the other pools' workers (``0``
disables that limit). Zero is refused, as ``pools.<name>.size = 0`` is in the
config: ``drain`` stops every worker of a pool and keeps them stopped. One
scale or restart of a pool at a time; another one meanwhile is refused
(409) rather than queued behind it. Every request is handled in its own
task, so ``status`` answers while a long scale drains its workers (or a
``propose`` waits for its votes). A request with a key its endpoint does not
take is refused, never read as the empty request (which, for drain, means
every pool).

**Drain**: every worker of the pool (or of every pool of the node) stops
fetching at once, finishes the tasks it holds, and exits; the reply comes
when all have (SIGKILL only for one stuck past its ``shutdown``). The slots
stay stopped — restarts of the pool by its parent included — until
``resume``; ``scale`` and ``restart`` of a drained pool are refused. Tasks
keep waiting in the stream, or are taken by other nodes' workers. Use it
before maintenance of a host: nothing is in flight on it afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import psutil

from broker import subjects
from protocols.variables import Change, ChangeRejectedError, VariableConflictError, VariableValidationError
from supervisor import metrics
from supervisor.control import ControlError, Handler, Later
from supervisor.pool import PoolDrainedError, PoolSupervisor
from supervisor.tree import EventSink

# Counters of the status reply per pool: reply key -> metric family name.
COUNTERS = {
    "processed": "foundation_tasks_processed",
    "failed": "foundation_tasks_failed",
    "dead_lettered": "foundation_tasks_dead_lettered",
    "restarts": "foundation_worker_restarts",
}
DURATION = "foundation_task_duration_seconds"
IN_FLIGHT = "foundation_tasks_in_flight"

# Puts a variable change to the vote and applies it: (name, value, proposer, reason, deadline) -> the change.
Propose = Callable[[str, Any, str, str, float], Awaitable[Change]]


class NodeControl:
    """The handlers behind a node's control service.

    Args:
        node: the node's name.
        pools: its pool supervisors by name.
        js: a JetStream context (consumer lag for ``status``).
        on_event: the node's lifecycle event sink (``scale`` events).
        nats_url: the node's NATS URL now.
        started: when the node started (Unix seconds).
        max_workers: node-wide bound on workers for scaling; 0 = none.
        identity: which credentials the node uses (a description, never a secret).
        propose: runs a variable change's vote (``None``: the endpoint refuses, 503).
    """

    def __init__(self, node: str, pools: Mapping[str, PoolSupervisor], js: Any, *, on_event: EventSink,
                 nats_url: Callable[[], str], started: float, max_workers: int = 0, identity: str = "",
                 propose: Propose | None = None) -> None:
        self.node = node
        self.pools = pools
        self.js = js
        self.on_event = on_event
        self.nats_url = nats_url
        self.started = started
        self.max_workers = max_workers
        self.identity = identity
        self._propose = propose
        self._busy: set[str] = set()  # pools with a scale or restart under way

    def endpoints(self) -> dict[str, Handler]:
        handlers = {"status": self.status, "scale": self.scale, "restart": self.restart,
                    "drain": self.drain, "resume": self.resume, "propose": self.propose}
        return {name: _strict(name, fn) for name, fn in handlers.items()}

    def _pool(self, name: Any) -> PoolSupervisor:
        if not isinstance(name, str) or name not in self.pools:
            raise ControlError(f"unknown pool {name!r}; pools on node {self.node}: {', '.join(self.pools) or 'none'}", 404)
        return self.pools[name]

    def _pools(self, args: dict[str, Any]) -> list[PoolSupervisor]:
        return [self._pool(args["pool"])] if args.get("pool") is not None else list(self.pools.values())

    def bounds(self, pool: PoolSupervisor) -> tuple[int, int]:
        """The sizes a scale request may ask of ``pool``: ``(1, max)``; max 0 = unbounded."""
        if pool.pool.max_size:
            return 1, pool.pool.max_size
        if not self.max_workers:
            return 1, 0
        others = sum(p.size for p in self.pools.values() if p is not pool)
        return 1, max(self.max_workers - others, 0)

    async def status(self, _args: dict[str, Any]) -> dict[str, Any]:
        return await status_report(self)

    async def scale(self, args: dict[str, Any]) -> Later:
        pool = self._pool(args.get("pool"))
        name = pool.pool.name
        size = args.get("size")
        if not isinstance(size, int) or isinstance(size, bool):
            raise ControlError(f"size must be a whole number, got {size!r}")
        low, high = self.bounds(pool)
        if size < low:
            raise ControlError(f"pool {name}: size must be at least {low}, as pools.{name}.size must; "
                               f"to stop its workers, drain it (foundation drain {name})")
        if high and size > high:
            why = (f"pools.{name}.max_size is {high}" if pool.pool.max_size
                   else f"supervisor.max_workers is {self.max_workers} and the node's other pools run {self.max_workers - high}")
            raise ControlError(f"pool {name}: size {size} is above {high} ({why})")
        self._reserve(pool, "scale")
        return Later(self._released(pool, self._scale(pool, size)))

    async def _scale(self, pool: PoolSupervisor, size: int) -> dict[str, Any]:
        removed = await pool.scale(size)
        self.on_event("scale", {"pool": pool.pool.name, "size": pool.size, "by": "request"})
        return {"pool": pool.pool.name, "size": pool.size, "removed": {slot: info.describe() for slot, info in removed.items()}}

    async def restart(self, args: dict[str, Any]) -> Later:
        if "slot" in args:
            slot = str(args["slot"])
            pool = self._pool(slot.rsplit(".", 1)[0])
            if slot not in {c.id for c in pool.children}:
                raise ControlError(f"pool {pool.pool.name} has no slot {slot!r}; slots: {', '.join(c.id for c in pool.children)}", 404)
            slots = [slot]
        else:
            pool = self._pool(args.get("pool"))
            slots = [c.id for c in pool.children]
        self._reserve(pool, "restart")
        return Later(self._released(pool, self._restart(pool, slots)))

    async def _restart(self, pool: PoolSupervisor, slots: list[str]) -> dict[str, Any]:
        for slot in slots:  # rolling: one at a time, each drained first
            await pool.restart_child(slot, "restart requested")
        return {"restarted": slots}

    async def drain(self, args: dict[str, Any]) -> Later:
        pools = self._pools(args)

        async def work() -> dict[str, Any]:
            results = await asyncio.gather(*(p.drain("drain requested") for p in pools))
            return {"drained": {p.pool.name: {slot: info.describe() for slot, info in r.items()}
                                for p, r in zip(pools, results, strict=True)}}

        return Later(work())

    async def resume(self, args: dict[str, Any]) -> Later:
        pools = self._pools(args)

        async def work() -> dict[str, Any]:
            return {"resumed": {pool.pool.name: await pool.resume() for pool in pools}}

        return Later(work())

    async def propose(self, args: dict[str, Any]) -> Later:
        """``vars propose`` through the node: the stakeholders vote, the node writes the agreed value."""
        name, deadline = args.get("name"), args.get("deadline", 2.0)
        if not isinstance(name, str) or "value" not in args:
            raise ControlError('propose takes {"name": ..., "value": ...}')
        if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not 0 < deadline <= 60:
            raise ControlError(f"deadline must be a number of seconds in (0, 60], got {deadline!r}")
        if self._propose is None:
            raise ControlError("this node does not run variable votes", 503)
        vote = self._propose(name, args["value"], str(args.get("proposer", ""))[:200],
                             str(args.get("reason", ""))[:1000], float(deadline))

        async def work() -> dict[str, Any]:
            try:
                change = await vote
            except VariableValidationError as exc:
                raise ControlError(f"rejected: {exc}", 422) from None
            except ChangeRejectedError as exc:
                raise ControlError(f"not accepted: {exc.verdict.reason}", 409) from None
            except VariableConflictError:
                raise ControlError("another change landed first; read the new value and propose again", 409) from None
            return {"name": name, "value": change.value, "version": change.version}

        return Later(work())

    def _reserve(self, pool: PoolSupervisor, what: str) -> None:
        """One scale or restart per pool at a time: another is refused, not queued behind it."""
        name = pool.pool.name
        if pool.drained:
            raise ControlError(f"pool {name} is drained; resume it before {what} (foundation resume {name})", 409)
        if name in self._busy:
            raise ControlError(f"pool {name}: a scale or restart is under way; {what} it once that is done", 409)
        self._busy.add(name)

    async def _released(self, pool: PoolSupervisor, work: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
        try:
            return await work
        except PoolDrainedError as exc:  # drained meanwhile
            raise ControlError(str(exc), 409) from None
        finally:
            self._busy.discard(pool.pool.name)


# The keys each request may carry: a request with any other key is refused,
# never read as the empty request (which, for drain, means every pool).
_ARGS = {"status": set(), "scale": {"pool", "size"}, "restart": {"pool", "slot"}, "drain": {"pool"},
         "resume": {"pool"}, "propose": {"name", "value", "reason", "proposer", "deadline"}}


def _strict(name: str, fn: Handler) -> Handler:
    async def checked(args: dict[str, Any]) -> Any:
        unknown = sorted(set(args) - _ARGS[name])
        if unknown:
            raise ControlError(f"{name} takes {', '.join(sorted(_ARGS[name])) or 'no arguments'}; "
                               f"unknown {', '.join(map(repr, unknown))}")
        return await fn(args)

    return checked


def _pool_figures() -> dict[str, dict[str, Any]]:
    """Per pool, from the node's metrics (every worker's): counters, in flight, handler-time buckets."""
    out: dict[str, dict[str, Any]] = {}
    names = {family: key for key, family in COUNTERS.items()}
    for family in metrics.registry().collect():
        for s in family.samples:
            pool = s.labels.get("pool")
            if pool is None:
                continue
            row = out.setdefault(pool, {"in_flight": 0, "duration_buckets": {}})
            if family.name in names and s.name.endswith("_total"):
                key = names[family.name]
                row[key] = row.get(key, 0) + int(s.value)
            elif family.name == IN_FLIGHT:
                row["in_flight"] += int(s.value)
            elif family.name == DURATION and s.name.endswith("_bucket"):
                le = s.labels["le"]
                row["duration_buckets"][le] = row["duration_buckets"].get(le, 0) + int(s.value)
    for row in out.values():
        # [[upper bound in seconds, cumulative count], ...], ascending; "+Inf" last.
        buckets = sorted(row["duration_buckets"].items(), key=lambda kv: float(kv[0]))
        row["duration_buckets"] = [[float(le) if le != "+Inf" else "+Inf", n] for le, n in buckets]
    return out


def _workers(pool: PoolSupervisor) -> list[dict[str, Any]]:
    workers = []
    for child in pool.workers:
        row: dict[str, Any] = {"id": child.id, "pid": child.pid if child.running else None, "running": child.running}
        if child.running and child.pid:
            try:
                row["rss_mb"] = round(psutil.Process(child.pid).memory_info().rss / 2**20, 1)
                row["uptime_s"] = round(time.monotonic() - child.started_at, 1)
            except psutil.Error:
                pass
        workers.append(row)
    return workers


async def status_report(control: NodeControl) -> dict[str, Any]:
    """The ``status`` reply: pools, workers, pids, RSS, counters, lag, handler times."""
    figures = _pool_figures()
    pools = {}
    for name, sup in control.pools.items():
        try:
            info = await control.js.consumer_info(subjects.TASKS_STREAM, subjects.consumer(name))
            lag = {"pending": info.num_pending, "ack_pending": info.num_ack_pending, "redelivered": info.num_redelivered}
        except Exception as exc:  # report what we can
            lag = {"error": str(exc)}
        counts = figures.get(name, {})
        _, high = control.bounds(sup)
        pools[name] = {
            "size": sup.size, "running": sup.running_count, "drained": sup.drained,
            "scale_max": high, "autoscaled": bool(sup.pool.max_size),
            "workers": _workers(sup), "consumer": lag,
            **{key: counts.get(key, 0) for key in COUNTERS},
            "in_flight": counts.get("in_flight", 0),
            "duration_buckets": counts.get("duration_buckets", []),
        }
    return {
        "node": control.node,
        "nats": control.nats_url(),
        "identity": control.identity,  # which credentials, never a secret
        "uptime_s": round(time.time() - control.started, 1),
        "time": time.time(),
        "max_workers": control.max_workers,
        "pools": pools,
    }
