"""One node: the root supervisor and everything around it (``foundation up``).

::

    root (rest_for_one, [supervisor] intensity)
      ├─ nats-server          only when nats.url is empty
      ├─ pool:echo            one_for_one, the pool's own intensity
      │    ├─ echo.0
      │    └─ echo.1
      └─ pool:…

Around the tree the node owns: a NATS connection for lifecycle events
(:mod:`supervisor.events`) and the control service (:mod:`supervisor.endpoints`),
one resource sampler per pool (:mod:`supervisor.quota`), an autoscaler per
pool with ``max_size`` (:mod:`supervisor.autoscale`), the systemd notifier
(:mod:`supervisor.systemd`) and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Any, Callable

from broker import DeclarationError, ServerOptions, connect, declare_all, declare_pool_consumer, identity_for, jetstream, subjects
from config.errors import ConfigError, FoundationError
from config.schema import Config, PoolConfig
from protocols.metrics import FORWARD_QUEUE, FORWARD_SUBJECT, count_forwarded
from supervisor import metrics
from supervisor.agents import NodeAgents
from supervisor.autoscale import Autoscaler
from supervisor.children import ExitInfo, ProcessChild
from supervisor.control import serve_control
from supervisor.endpoints import NodeControl
from supervisor.events import EventPublisher
from supervisor.forkserver import start_fork_server, worker_preload
from supervisor.natsserver import NatsServerChild
from supervisor.observe import NodeView, Sampler
from supervisor.pool import PoolSupervisor
from supervisor.quota import Breach, ResourceSampler
from supervisor.systemd import Notifier
from supervisor.tree import EXIT_ESCALATED, EXIT_START_FAILED, Supervisor
from workers.process import WorkerSpec

log = logging.getLogger("foundation.node")


EXIT_DECLARATION = 2  # like a config error: a stream or bucket differs in a way only the operator can fix
STATUS_INTERVAL = 1.0  # seconds between STATUS= refreshes (and watchdog pings, at most)


async def _count_forwarded(msg: Any) -> None:
    count_forwarded(msg.data)


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
        self.events = EventPublisher(self.name)
        self.agents = NodeAgents(cfg)  # registry, quota services, variables; a bad [variables.*] raises ConfigError
        self.notifier = Notifier()
        self.nats_child: NatsServerChild | None = None
        self.nc: Any = None
        self.identity = identity_for(cfg, "node")  # a missing seed or password stops `up` before anything starts
        self.pools: dict[str, PoolSupervisor] = {}
        self.samplers: dict[str, ResourceSampler] = {}
        self.root: Supervisor | None = None
        self.started = time.time()
        self._metrics_server: Any = None
        self.metrics_url = ""
        self._service: Any = None
        self._background: list[asyncio.Task[None]] = []  # samplers, heartbeat: until the end
        self._scalers: list[asyncio.Task[None]] = []  # stopped first: no resizing while stopping
        self._stopping = False
        self._ready = False
        self.sampler = Sampler(self._view(), interval=cfg.metrics.sample_interval)

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
                extra_args=self._auth_args(),
                sync=self.cfg.nats.sync,
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
                on_event=self.events,
                on_exit=self._on_process_exit,
            )
            self.pools[pool.name] = sup
            self.samplers[pool.name] = ResourceSampler(sup, self._breach_sink(pool.name))
            children.append(sup)
        return Supervisor(
            "root",
            children,
            strategy="rest_for_one",
            max_restarts=self.cfg.supervisor.max_restarts,
            max_seconds=self.cfg.supervisor.max_seconds,
            on_event=self.events,
        )

    def _auth_args(self) -> tuple[str, ...]:
        """With ``[auth] enabled`` the embedded server loads ``auth.conf`` and requires its identities."""
        if not self.cfg.auth.enabled:
            return ()
        conf = Path(self.cfg.auth.dir) / "auth.conf"
        if not conf.is_file():
            raise ConfigError("auth.dir", f"{conf} does not exist; run `foundation auth init --dir {self.cfg.auth.dir}`")
        return ("--config", str(conf.resolve()))

    def _spec_for(self, pool: PoolConfig) -> Callable[[str], WorkerSpec]:
        def spec(slot: str) -> WorkerSpec:
            return WorkerSpec(
                pool=pool, worker_id=slot, nats_url=self.nats_url, node=self.name,
                connect_timeout=self.cfg.nats.connect_timeout, registry_ttl=self.cfg.node.registry_ttl,
                identity=identity_for(self.cfg, "worker", f"{self.name}.{slot}"),
            )

        return spec

    async def _prepare_pool(self, pool: PoolConfig) -> None:
        await self._ensure_connected()
        await declare_pool_consumer(jetstream(self.nc), pool)

    async def _ensure_connected(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            return
        self.nc = await connect(self.nats_url, name=f"supervisor {self.name}", connect_timeout=self.cfg.nats.connect_timeout,
                                **self.identity.connect_options())
        # Every stream and bucket, with nats.replicas, before anything uses one
        # (workers may not create any: broker.permissions).
        await declare_all(jetstream(self.nc), self.cfg.nats)
        self.events.attach(self.nc)
        # Rounds run outside any node (the CLI) are counted by one node.
        await self.nc.subscribe(FORWARD_SUBJECT, queue=FORWARD_QUEUE, cb=_count_forwarded)
        self._service = await serve_control(self.nc, self.name, NodeControl(self).endpoints())
        await self.agents.start(self.nc, self._service)  # before any worker starts: they need what it declares

    # -- exits, quotas, scaling ---------------------------------------------

    def _on_process_exit(self, child: ProcessChild, pid: int, info: ExitInfo) -> None:
        try:
            metrics.child_exited(pid)
        except Exception:  # bookkeeping must never disturb supervision
            log.exception("folding the metrics of %s (pid %d) failed", child.id, pid)
        self.agents.worker_exited(child.id, pid)  # its registry entry goes now, not at the TTL

    def _breach_sink(self, pool: str) -> Callable[[str, int, Breach, str], None]:
        def sink(slot: str, pid: int, breach: Breach, action: str) -> None:
            self.events("quota", {
                "pool": pool, "child": slot, "pid": pid, "quota": breach.kind,
                "value": round(breach.value, 1), "limit": breach.limit, "action": action,
            })

        return sink

    async def _lag(self, pool: str) -> tuple[int, int]:
        info = await jetstream(self.nc).consumer_info(subjects.TASKS_STREAM, subjects.consumer(pool))
        return info.num_pending, info.num_ack_pending

    def _autoscaler(self, sup: PoolSupervisor) -> Autoscaler:
        name = sup.pool.name
        return Autoscaler(
            sup,
            lambda: self._lag(name),
            on_scale=lambda size: self.events("scale", {"pool": name, "size": size, "by": "autoscale"}),
        )

    # -- sampled metrics -------------------------------------------------------

    def _view(self) -> NodeView:
        return NodeView(
            node=self.name,
            pools=self.pools,
            nc=lambda: self.nc,
            registry=lambda: self.agents.registry,
            monitor_urls=self._monitor_urls,
            ready=lambda: self._ready and not self._stopping,
            variables=self.agents.space,
        )

    def _monitor_urls(self) -> list[str]:
        if self.nats_child is not None:
            address = self.nats_child.address
            return [address.monitor_url] if address is not None else []
        return list(self.cfg.nats.monitor_urls)

    # -- systemd -------------------------------------------------------------

    def status_line(self) -> str:
        """``STATUS=`` text: running/size per pool."""
        parts = [
            f"{name} {sup.running_count}/{sup.size}" + (" drained" if sup.drained else "")
            for name, sup in self.pools.items()
        ]
        line = "pools: " + (", ".join(parts) or "none")
        return f"stopping; {line}" if self._stopping else line

    async def _heartbeat(self) -> None:
        # Runs on the main loop on purpose: if the loop wedges, the watchdog
        # pings stop and systemd restarts the node.
        interval = min(self.notifier.watchdog_interval or STATUS_INTERVAL, STATUS_INTERVAL)
        while True:
            if self.notifier.watchdog_interval is not None:
                self.notifier.watchdog()
            self.notifier.status(self.status_line())
            await asyncio.sleep(interval)

    # -- run -------------------------------------------------------------

    async def run(self) -> int:
        """Start the tree, serve until SIGTERM/SIGINT or escalation; the exit code."""
        # workers.metrics imports prometheus_client, which is safe to preload
        # here: PROMETHEUS_MULTIPROC_DIR is already set (foundation up sets it first).
        start_fork_server(worker_preload(p.handler for p in self.cfg.pools.values()))
        self.root = self._build()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        metrics.declare(self.cfg.pools)
        if self.cfg.metrics.port:
            try:
                self._metrics_server, port = metrics.serve(
                    self.cfg.metrics.host, self.cfg.metrics.port, node=self.name, sampled=self.sampler.families
                )
            except OSError as exc:
                self.announce(f"foundation: cannot serve /metrics on {self.cfg.metrics.host}:{self.cfg.metrics.port}: {exc.strerror}; set metrics.port (0 disables)")
                return EXIT_START_FAILED
            self.metrics_url = f"http://{self.cfg.metrics.host}:{port}/metrics"
            self.announce(f"metrics: {self.metrics_url}")
        try:
            await self.root.start()
        except DeclarationError as exc:  # a stream or bucket NATS holds differently: the operator's call
            self.announce(f"foundation: {exc}")
            self.notifier.stopping(f"failed to start: {exc}")
            await self._close()
            return EXIT_DECLARATION
        except FoundationError as exc:  # a child, or a declaration or service it needs
            self.announce(f"foundation: {exc}")
            self.notifier.stopping(f"failed to start: {exc}")
            await self._close()
            return EXIT_START_FAILED
        self._start_background()
        where = "embedded" if self.nats_child else "external"
        self.announce(f"nats: {self.nats_url} ({where})")
        sizes = ", ".join(f"{p.pool.name}={p.size}" for p in self.pools.values())
        self._ready = True
        self.notifier.ready(
            self.status_line(), X_FOUNDATION_NODE=self.name, X_FOUNDATION_NATS=self.nats_url,
            X_FOUNDATION_MONITOR=self.nats_child.address.monitor_url if self.nats_child and self.nats_child.address else "",
            X_FOUNDATION_METRICS=self.metrics_url,
        )
        self.announce(f"node {self.name} up: pools {sizes or 'none'}; Ctrl-C or SIGTERM to stop")
        stopped = asyncio.create_task(stop.wait())
        failed = asyncio.create_task(self.root.wait())
        await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
        if failed.done():
            info = failed.result()
            self.notifier.stopping(f"gave up: {info.reason}")
            self.announce(f"foundation: node {self.name} gave up: {info.reason}")
            await self._close()
            return EXIT_ESCALATED
        stopped.cancel()
        self._stopping = True
        self.notifier.stopping("draining pools and stopping")
        self.announce(f"node {self.name}: draining pools and stopping")
        self._stop_background(all=False)
        await self.root.stop("node stopping")
        await self._close()
        self.announce(f"node {self.name}: stopped")
        return 0

    def _start_background(self) -> None:
        for name, sampler in self.samplers.items():
            self._background.append(asyncio.create_task(sampler.run(), name=f"sampler {name}"))
        for sup in self.pools.values():
            if sup.pool.max_size:
                self._scalers.append(asyncio.create_task(self._autoscaler(sup).run(), name=f"autoscale {sup.pool.name}"))
        self._background.append(asyncio.create_task(self._heartbeat(), name="heartbeat"))
        self._background.append(asyncio.create_task(self.sampler.run(), name="metrics sampler"))

    def _stop_background(self, *, all: bool = True) -> None:
        # While the pools drain, the samplers keep enforcing quotas (a task
        # may still blow up) and the heartbeat keeps systemd's watchdog fed
        # and STATUS= current; only the autoscalers stop at once.
        groups = [self._scalers, self._background] if all else [self._scalers]
        for tasks in groups:
            for task in tasks:
                task.cancel()
            tasks.clear()

    async def _disconnect(self) -> None:
        """Publish the last events and close the node's NATS connection."""
        if self.nc is None or self.nc.is_closed:
            return
        await self.agents.stop()
        await self.events.flush()
        try:
            await self.nc.close()
        except Exception:  # closing during shutdown; nothing left to do
            pass

    async def _close(self) -> None:
        self._stop_background()
        await self._disconnect()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        self.notifier.close()
