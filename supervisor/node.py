"""One node: the root supervisor and everything around it (``foundation up``).

::

    root (rest_for_one, [supervisor] intensity)
      ├─ nats-server          only when nats.url is empty
      ├─ pool:echo            one_for_one, the pool's own intensity
      │    ├─ echo.0
      │    └─ echo.1
      └─ pool:…

The node also owns a NATS connection for lifecycle events and the control
service, and the ``/metrics`` endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Any, Callable

import psutil

from broker import (
    ServerOptions,
    connect,
    declare_pool_consumer,
    declare_streams,
    encode,
    jetstream,
    subjects,
)
from config.schema import Config, PoolConfig
from supervisor import metrics
from supervisor.children import ChildStartError, ExitInfo, ProcessChild
from supervisor.control import ControlError, serve_control
from supervisor.forkserver import handler_modules, start_fork_server
from supervisor.natsserver import NatsServerChild
from supervisor.pool import PoolSupervisor
from supervisor.tree import EXIT_ESCALATED, EXIT_START_FAILED, Supervisor
from workers.process import WorkerSpec

log = logging.getLogger("foundation.node")


class Node:
    """Runs one node until it is told to stop or its tree gives up.

    Args:
        cfg: the validated config.
        announce: prints user-facing lines (where NATS and /metrics are).
    """

    def __init__(self, cfg: Config, announce: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.name = cfg.node.name
        self.announce = announce
        self.nats_child: NatsServerChild | None = None
        self.nc: Any = None
        self.pools: dict[str, PoolSupervisor] = {}
        self.root: Supervisor | None = None
        self.started = time.time()
        self._metrics_server: Any = None
        self._service: Any = None

    @property
    def nats_url(self) -> str:
        if self.nats_child is not None:
            assert self.nats_child.address is not None, "nats-server not started"
            return self.nats_child.address.url
        return self.cfg.nats.url

    # -- tree ------------------------------------------------------------

    def _build(self) -> Supervisor:
        children: list[Any] = []
        if self.cfg.nats.embedded:
            opts = ServerOptions(
                store_dir=Path(self.cfg.nats.store_dir).resolve(),
                port=self.cfg.nats.port,
                monitor_port=self.cfg.nats.monitor_port,
                name=self.name,
            )
            self.nats_child = NatsServerChild(
                opts, shutdown=self.cfg.supervisor.shutdown, on_exit=self._on_process_exit, before_stop=self._disconnect
            )
            children.append(self.nats_child)
        for pool in self.cfg.pools.values():
            sup = PoolSupervisor(
                pool,
                spec_for=self._spec_for(pool),
                prepare=self._prepare_pool,
                on_event=self._event,
                on_exit=self._on_process_exit,
            )
            self.pools[pool.name] = sup
            children.append(sup)
        return Supervisor(
            "root",
            children,
            strategy="rest_for_one",
            max_restarts=self.cfg.supervisor.max_restarts,
            max_seconds=self.cfg.supervisor.max_seconds,
            on_event=self._event,
        )

    def _spec_for(self, pool: PoolConfig) -> Callable[[str], WorkerSpec]:
        def spec(slot: str) -> WorkerSpec:
            return WorkerSpec(
                pool=pool, worker_id=slot, nats_url=self.nats_url, node=self.name,
                connect_timeout=self.cfg.nats.connect_timeout,
            )

        return spec

    async def _prepare_pool(self, pool: PoolConfig) -> None:
        await self._ensure_connected()
        js = jetstream(self.nc)
        await declare_streams(js, self.cfg.nats)
        await declare_pool_consumer(js, pool)

    async def _ensure_connected(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            return
        self.nc = await connect(self.nats_url, name=f"supervisor {self.name}", connect_timeout=self.cfg.nats.connect_timeout)
        self._service = await serve_control(
            self.nc, self.name, {"status": self._status, "scale": self._scale, "restart": self._restart}
        )

    # -- events and exits --------------------------------------------------

    def _event(self, kind: str, data: dict[str, Any]) -> None:
        data = {"node": self.name, "kind": kind, "time": time.time(), **data}
        child = str(data.get("child", ""))
        if kind == "restart" and "." in child:
            metrics.metrics().restarts.labels(child.rsplit(".", 1)[0], _reason_label(str(data.get("reason", "")))).inc()
        elif kind == "escalate":
            metrics.metrics().escalations.labels(str(data.get("supervisor"))).inc()
        if self.nc is not None and self.nc.is_connected:
            asyncio.get_running_loop().create_task(self._publish_event(kind, data))

    async def _publish_event(self, kind: str, data: dict[str, Any]) -> None:
        try:
            await self.nc.publish(subjects.event(self.name, kind), encode(data))
        except Exception as exc:  # events are best effort; the log has them too
            log.debug("event %s not published: %s", kind, exc)

    def _on_process_exit(self, child: ProcessChild, pid: int, info: ExitInfo) -> None:
        metrics.child_exited(pid)

    # -- control endpoints --------------------------------------------------

    def _pool(self, name: Any) -> PoolSupervisor:
        if not isinstance(name, str) or name not in self.pools:
            raise ControlError(f"unknown pool {name!r}; pools on node {self.name}: {', '.join(self.pools) or 'none'}")
        return self.pools[name]

    async def _status(self, _args: dict[str, Any]) -> dict[str, Any]:
        return await status_report(self)

    async def _scale(self, args: dict[str, Any]) -> dict[str, Any]:
        pool = self._pool(args.get("pool"))
        size = args.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ControlError(f"size must be a whole number >= 0, got {size!r}")
        return {"pool": pool.pool.name, "size": await pool.scale(size)}

    async def _restart(self, args: dict[str, Any]) -> dict[str, Any]:
        if "slot" in args:
            slot = str(args["slot"])
            pool = self._pool(slot.rsplit(".", 1)[0])
            await pool.restart_child(slot, "restart requested")
            return {"restarted": [slot]}
        pool = self._pool(args.get("pool"))
        done = []
        for child in list(pool.children):
            await pool.restart_child(child.id, "restart requested")
            done.append(child.id)
        return {"restarted": done}

    # -- run -------------------------------------------------------------

    async def run(self) -> int:
        """Start the tree, serve until SIGTERM/SIGINT or escalation; the exit code."""
        start_fork_server(["workers.process", *handler_modules(p.handler for p in self.cfg.pools.values())])
        self.root = self._build()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if self.cfg.metrics.port:
            try:
                self._metrics_server, port = metrics.serve(self.cfg.metrics.host, self.cfg.metrics.port)
            except OSError as exc:
                self.announce(f"foundation: cannot serve /metrics on {self.cfg.metrics.host}:{self.cfg.metrics.port}: {exc.strerror}; set metrics.port (0 disables)")
                return EXIT_START_FAILED
            self.announce(f"metrics: http://{self.cfg.metrics.host}:{port}/metrics")
        try:
            await self.root.start()
        except ChildStartError as exc:
            self.announce(f"foundation: {exc}")
            await self._close()
            return EXIT_START_FAILED
        where = "embedded" if self.nats_child else "external"
        self.announce(f"nats: {self.nats_url} ({where})")
        sizes = ", ".join(f"{p.pool.name}={p.size}" for p in self.pools.values())
        self.announce(f"node {self.name} up: pools {sizes or 'none'}; Ctrl-C or SIGTERM to stop")
        stopped = asyncio.create_task(stop.wait())
        failed = asyncio.create_task(self.root.wait())
        await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
        if failed.done():
            info = failed.result()
            self.announce(f"foundation: node {self.name} gave up: {info.reason}")
            await self._close()
            return EXIT_ESCALATED
        stopped.cancel()
        self.announce(f"node {self.name}: draining pools and stopping")
        await self.root.stop("node stopping")
        await self._close()
        self.announce(f"node {self.name}: stopped")
        return 0

    async def _disconnect(self) -> None:
        nc, self.nc = self.nc, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), 5)
            except Exception as exc:  # closing during shutdown; nothing left to do
                log.debug("closing the node's NATS connection: %s", exc)

    async def _close(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        await self._disconnect()


def _reason_label(reason: str) -> str:
    # Keep label cardinality small: "signal SIGKILL", "exit 1 (error)" -> kind only.
    return reason.split(":", 1)[0].split(" (")[0] or "unknown"


async def status_report(node: Node) -> dict[str, Any]:
    """The ``status`` reply: pools, workers, pids, RSS, processed counts, lag."""
    js = jetstream(node.nc)
    processed = _processed_by_pool()
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
        pools[name] = {"size": sup.size, "workers": workers, "processed": processed.get(name, 0), "consumer": lag}
    return {
        "node": node.name,
        "nats": node.nats_url,
        "uptime_s": round(time.time() - node.started, 1),
        "pools": pools,
    }


def _processed_by_pool() -> dict[str, int]:
    import os

    if not os.environ.get(metrics.ENV):
        return {}
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    out: dict[str, int] = {}
    for family in registry.collect():
        if family.name == "foundation_tasks_processed":
            for s in family.samples:
                if s.name.endswith("_total"):
                    out[s.labels["pool"]] = out.get(s.labels["pool"], 0) + int(s.value)
    return out
