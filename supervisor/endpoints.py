"""The control endpoints of a node: what ``foundation.control.<node>.*`` do.

========  ===============================  =====================================
endpoint  request                          reply
========  ===============================  =====================================
status    ``{}``                           node, nats, uptime, pools (size,
                                           running, drained, workers with pid,
                                           RSS, uptime; processed; consumer lag)
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
from typing import TYPE_CHECKING, Any

import psutil

from broker import jetstream, subjects
from supervisor import metrics
from protocols.variables import ChangeRejectedError, VariableConflictError, VariableValidationError
from supervisor.agents import propose_variable
from supervisor.control import ControlError, Handler
from supervisor.pool import PoolDrainedError, PoolSupervisor

if TYPE_CHECKING:
    from supervisor.node import Node


class NodeControl:
    """The handlers behind a node's control service.

    Args:
        node: the running node.
    """

    def __init__(self, node: Node) -> None:
        self.node = node

    def endpoints(self) -> dict[str, Handler]:
        handlers = {"status": self.status, "scale": self.scale, "restart": self.restart,
                    "drain": self.drain, "resume": self.resume, "propose": self.propose}
        return {name: _strict(name, fn) for name, fn in handlers.items()}

    def _pool(self, name: Any) -> PoolSupervisor:
        pools = self.node.pools
        if not isinstance(name, str) or name not in pools:
            raise ControlError(f"unknown pool {name!r}; pools on node {self.node.name}: {', '.join(pools) or 'none'}")
        return pools[name]

    def _pools(self, args: dict[str, Any]) -> list[PoolSupervisor]:
        return [self._pool(args["pool"])] if args.get("pool") is not None else list(self.node.pools.values())

    async def status(self, _args: dict[str, Any]) -> dict[str, Any]:
        return await status_report(self.node)

    async def scale(self, args: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool(args.get("pool"))
        size = args.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ControlError(f"size must be a whole number >= 0, got {size!r}")
        try:
            removed = await pool.scale(size)
        except PoolDrainedError as exc:
            raise ControlError(str(exc), 409) from None
        self.node.events("scale", {"pool": pool.pool.name, "size": pool.size, "by": "request"})
        return {"pool": pool.pool.name, "size": pool.size, "removed": {slot: info.describe() for slot, info in removed.items()}}

    async def restart(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self._restart(args)
        except PoolDrainedError as exc:
            raise ControlError(str(exc), 409) from None

    async def _restart(self, args: dict[str, Any]) -> dict[str, Any]:
        if "slot" in args:
            slot = str(args["slot"])
            pool = self._pool(slot.rsplit(".", 1)[0])
            if slot not in {c.id for c in pool.children}:
                raise ControlError(f"pool {pool.pool.name} has no slot {slot!r}; slots: {', '.join(c.id for c in pool.children)}")
            await pool.restart_child(slot, "restart requested")
            return {"restarted": [slot]}
        pool = self._pool(args.get("pool"))
        done = []
        for child in list(pool.children):
            await pool.restart_child(child.id, "restart requested")
            done.append(child.id)
        return {"restarted": done}

    async def drain(self, args: dict[str, Any]) -> dict[str, Any]:
        pools = self._pools(args)
        results = await asyncio.gather(*(p.drain("drain requested") for p in pools))
        return {"drained": {p.pool.name: {slot: info.describe() for slot, info in r.items()} for p, r in zip(pools, results, strict=True)}}

    async def propose(self, args: dict[str, Any]) -> dict[str, Any]:
        """``vars propose`` through the node: the stakeholders vote, the node writes the agreed value."""
        name, deadline = args.get("name"), args.get("deadline", 2.0)
        if not isinstance(name, str) or "value" not in args:
            raise ControlError('propose takes {"name": ..., "value": ...}')
        if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not 0 < deadline <= 60:
            raise ControlError(f"deadline must be a number of seconds in (0, 60], got {deadline!r}")
        registry = self.node.agents.registry
        if registry is None:
            raise ControlError("the node's registry is not running yet", 503)
        try:
            change = await propose_variable(
                self.node.nc, registry, name, args["value"], deadline=float(deadline),
                proposer=str(args.get("proposer", ""))[:200], reason=str(args.get("reason", ""))[:1000],
            )
        except VariableValidationError as exc:
            raise ControlError(f"rejected: {exc}", 422) from None
        except ChangeRejectedError as exc:
            raise ControlError(f"not accepted: {exc.verdict.reason}", 409) from None
        except VariableConflictError:
            raise ControlError("another change landed first; read the new value and propose again", 409) from None
        return {"name": name, "value": change.value, "version": change.version}

    async def resume(self, args: dict[str, Any]) -> dict[str, Any]:
        resumed = {}
        for pool in self._pools(args):
            resumed[pool.pool.name] = await pool.resume()
        return {"resumed": resumed}


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


async def status_report(node: Node) -> dict[str, Any]:
    """The ``status`` reply: pools, workers, pids, RSS, processed counts, lag."""
    js = jetstream(node.nc)
    processed = metrics.totals("foundation_tasks_processed", "pool")
    pools = {}
    for name, sup in node.pools.items():
        workers = []
        for child in sup.workers:
            row: dict[str, Any] = {"id": child.id, "pid": child.pid if child.running else None, "running": child.running}
            if child.running and child.pid:
                try:
                    proc = psutil.Process(child.pid)
                    row["rss_mb"] = round(proc.memory_info().rss / 2**20, 1)
                    row["uptime_s"] = round(time.monotonic() - child.started_at, 1)
                except psutil.Error:
                    pass
            workers.append(row)
        try:
            info = await js.consumer_info(subjects.TASKS_STREAM, subjects.consumer(name))
            lag = {"pending": info.num_pending, "ack_pending": info.num_ack_pending, "redelivered": info.num_redelivered}
        except Exception as exc:  # report what we can
            lag = {"error": str(exc)}
        pools[name] = {
            "size": sup.size, "running": sup.running_count, "drained": sup.drained, "workers": workers,
            "processed": int(processed.get(name, 0)), "consumer": lag,
        }
    return {
        "node": node.name,
        "nats": node.nats_url,
        "identity": node.identity.describe(),  # which credentials, never a secret
        "uptime_s": round(time.time() - node.started, 1),
        "pools": pools,
    }
