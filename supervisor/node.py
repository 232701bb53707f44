"""One node: the root supervisor and everything around it (``foundation up``).

::

    root (rest_for_one, [supervisor] intensity)
      ├─ nats-server          only when nats.url is empty
      ├─ node-services        connection, streams, control service, registry,
      │                       quota candidates, variables (supervisor.services)
      ├─ pool:echo            one_for_one, the pool's own intensity
      │    ├─ echo.0
      │    └─ echo.1
      └─ pool:…

Each child is ready when its ``start()`` returns, so a pool starts only once
the services it needs exist, and a node with no pools still answers
``$SRV.PING`` and ``status``. The node's background work — one resource
sampler per pool (:mod:`supervisor.quota`), an autoscaler per pool with
``max_size`` (:mod:`supervisor.autoscale`), the metrics sampler
(:mod:`supervisor.observe`) and the systemd heartbeat
(:mod:`supervisor.systemd`) — runs in a task group that ends with
:meth:`Node.run`; ``/metrics`` is served from start to end.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from collections.abc import Callable, Coroutine
from typing import Any

from broker import DeclarationError, ServerOptions, declare_pool_consumer, identity_for, subjects
from config.errors import ConfigError, FoundationError
from config.schema import Config, PoolConfig
from supervisor import metrics
from supervisor.agents import NodeAgents, propose_variable
from supervisor.control import ControlError
from supervisor.autoscale import Autoscaler
from supervisor.children import ExitInfo, ProcessChild
from supervisor.endpoints import NodeControl
from supervisor.events import EventPublisher
from supervisor.forkserver import start_fork_server, worker_preload
from supervisor.natsserver import NatsServerChild
from supervisor.observe import NodeView, Sampler
from supervisor.pool import PoolSupervisor
from supervisor.quota import Breach, ResourceSampler
from supervisor.services import NodeServices
from supervisor.storelock import StoreLockedError, lock_store
from supervisor.systemd import Notifier
from supervisor.tree import EXIT_ESCALATED, EXIT_START_FAILED, Supervisor
from workers.process import WorkerSpec

log = logging.getLogger("foundation.node")

EXIT_DECLARATION = 2  # like a config error: a stream or bucket differs in a way only the operator can fix
EXIT_STORE_LOCKED = 2  # another node holds nats.store_dir: the operator's call too
STATUS_INTERVAL = 1.0  # seconds between STATUS= refreshes (and watchdog pings, at most)


async def _logged(work: Coroutine[Any, Any, None], name: str) -> None:
    """Background work that fails is logged; it never takes the node (its task group) down."""
    try:
        await work
    except Exception:
        log.exception("%s failed and stopped", name)


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
        self.identity = identity_for(cfg, "node")  # a missing seed or password stops `up` before anything starts
        self.services = NodeServices(cfg, url=lambda: self.nats_url, events=self.events, agents=self.agents,
                                     endpoints=self._endpoints, identity=self.identity)
        self.pools: dict[str, PoolSupervisor] = {}
        self.samplers: dict[str, ResourceSampler] = {}
        self.root: Supervisor | None = None
        self.started = time.time()
        self._metrics_server: Any = None
        self._store_lock: int | None = None  # held until the process exits
        self.metrics_url = ""
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
            self.nats_child = NatsServerChild(opts, shutdown=self.cfg.supervisor.shutdown, on_exit=self._on_process_exit)
            children.append(self.nats_child)
        children.append(self.services)
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
        await declare_pool_consumer(self.services.js, pool)

    def _endpoints(self, js: Any) -> dict[str, Any]:
        return NodeControl(
            self.name, self.pools, js, on_event=self.events, nats_url=lambda: self.nats_url,
            started=self.started, max_workers=self.cfg.supervisor.max_workers, identity=self.identity.describe(),
            propose=self._propose,
        ).endpoints()

    async def _propose(self, name: str, value: Any, proposer: str, reason: str, deadline: float) -> Any:
        registry, nc = self.agents.registry, self.services.nc
        if registry is None or nc is None:
            raise ControlError("the node's registry is not running yet", 503)
        return await propose_variable(nc, registry, name, value, proposer=proposer, reason=reason, deadline=deadline)

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
        info = await self.services.js.consumer_info(subjects.TASKS_STREAM, subjects.consumer(pool))
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
            nc=lambda: self.services.nc,
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
        if self.cfg.nats.embedded:
            try:  # first: a second node must not even bind the metrics port
                self._store_lock = lock_store(Path(self.cfg.nats.store_dir).resolve(), self.name)
            except StoreLockedError as exc:
                self.announce(f"foundation: {exc}")
                return EXIT_STORE_LOCKED
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
            async with asyncio.TaskGroup() as background:
                return await self._serve(stop, background)
        finally:
            if self._metrics_server is not None:
                self._metrics_server.shutdown()
            self.notifier.close()

    async def _serve(self, stop: asyncio.Event, background: asyncio.TaskGroup) -> int:
        assert self.root is not None
        try:
            await self.root.start()
        except DeclarationError as exc:  # a stream or bucket NATS holds differently: the operator's call
            self.announce(f"foundation: {exc}")
            self.notifier.stopping(f"failed to start: {exc}")
            return EXIT_DECLARATION
        except FoundationError as exc:  # a child, or a declaration or service it needs
            self.announce(f"foundation: {exc}")
            self.notifier.stopping(f"failed to start: {exc}")
            return EXIT_START_FAILED
        # Autoscalers stop first (no resizing while stopping); while the pools
        # drain, the samplers keep enforcing quotas (a task may still blow up)
        # and the heartbeat keeps systemd's watchdog fed and STATUS= current.
        def spawn(work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
            return background.create_task(_logged(work, name), name=name)

        scalers = [spawn(self._autoscaler(sup).run(), f"autoscale {sup.pool.name}")
                   for sup in self.pools.values() if sup.pool.max_size]
        others = [spawn(sampler.run(), f"sampler {name}") for name, sampler in self.samplers.items()]
        others += [spawn(self._heartbeat(), "heartbeat"), spawn(self.sampler.run(), "metrics sampler")]
        try:
            return await self._until_stopped(stop, scalers)
        finally:
            for task in scalers + others:
                task.cancel()

    async def _until_stopped(self, stop: asyncio.Event, scalers: list[asyncio.Task[None]]) -> int:
        assert self.root is not None
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
        stopped.cancel()
        if failed.done():
            info = failed.result()
            self.notifier.stopping(f"gave up: {info.reason}")
            self.announce(f"foundation: node {self.name} gave up: {info.reason}")
            return EXIT_ESCALATED
        failed.cancel()
        self._stopping = True
        self.notifier.stopping("draining pools and stopping")
        self.announce(f"node {self.name}: draining pools and stopping")
        for task in scalers:
            task.cancel()
        workers = sum(p.running_count for p in self.pools.values())
        await self.root.stop("node stopping")
        # One line for all: the workers' own closes are not logged one by one.
        self.announce(f"node {self.name}: stopped ({workers} worker(s) drained, NATS connections closed)")
        return 0
