"""What a chaos run runs against: a cluster, its network, toxiproxies, a node.

:func:`open_env` builds it for a scenario (and removes all of it after):

* a :class:`~chaos.netns.Network` and a :class:`~chaos.netcluster.NetnsCluster`
  when the scenario partitions servers, else a :class:`~broker.LocalCluster`;
* with ``client_proxies``, a toxiproxy (:func:`open_toxiproxy`) with one proxy
  per server: the node and the workload reach the cluster only through them;
* a node (:class:`RestartableNode`, on :mod:`supervisor.harness`) on that cluster with one pool running
  :func:`chaos.handlers.count`, streams and buckets at ``replicas``.

Or, given ``url`` (and ``pool``, ``node``), an existing deployment: then
only what needs no ownership of the servers can run (see
:data:`chaos.scenarios.EXISTING_OK`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import urllib.request
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker import LocalCluster, ServerNotReadyError
from chaos.errors import ChaosError, NemesisUnavailable
from chaos.netcluster import NetnsCluster
from chaos.netns import Network
from chaos.toxiproxy import ToxiproxyClient, open_toxiproxy
from config.errors import FoundationError
from supervisor.harness import NodeFailedError, NodeProcess, write_config


class RestartableNode:
    """A node started from one config, killed and started again as systemd would (``Restart=always``)."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc: NodeProcess | None = None
        self.name = ""

    def start(self, timeout: float = 60.0) -> "RestartableNode":
        self.proc = NodeProcess(self.config).wait_up(timeout)
        self.name = self.proc.name
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive

    @property
    def pid(self) -> int:
        if self.proc is None or not self.proc.alive:
            raise ChaosError("the node is not running")
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(FoundationError):
                self.proc.stop()

    def __enter__(self) -> "RestartableNode":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Env:
    url: str  # what the workload connects to
    pool: str
    node_name: str = ""
    cluster: LocalCluster | None = None
    network: Network | None = None
    node: RestartableNode | None = None
    toxiproxy: ToxiproxyClient | None = None
    proxies: list[str] = field(default_factory=list)
    replicas: int = 1
    nc: Any = None  # the run's NATS client, set once connected

    def require_cluster(self, what: str) -> LocalCluster:
        if self.cluster is None:
            raise NemesisUnavailable(f"{what} needs a cluster this run starts (run without --url)")
        return self.cluster

    def require_network(self, what: str) -> Network:
        if self.network is None:
            raise NemesisUnavailable(f"{what} needs the servers in network namespaces this run makes")
        return self.network

    def require_node(self, what: str) -> RestartableNode:
        if self.node is None:
            raise NemesisUnavailable(f"{what} needs a node this run starts (run without --url)")
        return self.node

    def require_toxiproxy(self, what: str) -> tuple[ToxiproxyClient, list[str]]:
        if self.toxiproxy is None or not self.proxies:
            raise NemesisUnavailable(f"{what} needs client proxies through a toxiproxy")
        return self.toxiproxy, self.proxies

    async def worker_pids(self) -> dict[str, int]:
        """Running workers of the pool: slot id -> pid (from the node's control service)."""
        from chaos.kill_workers import worker_pids

        if not self.node_name:
            raise NemesisUnavailable("killing workers needs the node's name (--node)")
        return await worker_pids(self.nc, self.node_name, self.pool)


def _replicas_supported() -> bool:
    from config.schema import NatsConfig

    return any(f.name == "replicas" for f in dataclasses.fields(NatsConfig))


POOL = {
    "handler": "chaos.handlers:count", "size": 3, "concurrency": 8, "ack_wait": 2.0,
    "max_restarts": 10_000, "max_seconds": 10, "shutdown": 5,
}


@contextlib.contextmanager
def open_env(
    *,
    servers: int = 3,
    replicas: int = 3,
    partitions: bool = False,
    client_proxies: bool = False,
    pool: str = "chaos",
    pool_table: dict[str, Any] | None = None,
    sync: str = "",
    directory: Path | None = None,
) -> Iterator[Env]:
    """Start everything a scenario needs (see the module doc); stop it all on exit.

    Raises:
        NemesisUnavailable: the machine lacks what the scenario needs.
    """
    with contextlib.ExitStack() as stack:
        base = directory or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="foundation-chaos-")))
        names = [f"n{i + 1}" for i in range(servers)]
        network = None
        if partitions:
            network = stack.enter_context(Network(names))
            cluster: LocalCluster = NetnsCluster(base / "cluster", network, sync=sync)
            stack.enter_context(cluster)
        else:
            for attempt in range(3):
                # Route ports are picked free just before the servers start; another
                # process may take one meanwhile (broker.cluster says so): new ports, again.
                cluster = LocalCluster(base / f"cluster{attempt or ''}", servers, sync=sync)
                try:
                    stack.enter_context(cluster)
                    break
                except ServerNotReadyError:
                    if attempt == 2:
                        raise
        _wait_peers_current(cluster)
        url = cluster.url
        env = Env(url=url, pool=pool, cluster=cluster, network=network, replicas=replicas)
        if client_proxies:
            api = stack.enter_context(open_toxiproxy())
            env.toxiproxy = ToxiproxyClient(api)
            listens = []
            for name, server_url in zip(names, cluster.urls):
                proxy = f"foundation-chaos-{name}"
                with contextlib.suppress(ChaosError):
                    env.toxiproxy.delete(proxy)  # left by an earlier run on a shared toxiproxy
                listens.append(env.toxiproxy.create(proxy, server_url.removeprefix("nats://"))["listen"])
                env.proxies.append(proxy)
                stack.callback(_delete, env.toxiproxy, proxy)
            env.url = ",".join(f"nats://{listen}" for listen in listens)
        nats: dict[str, Any] = {}
        if _replicas_supported():
            nats["replicas"] = replicas
        else:
            env.replicas = 1
        (base / "node").mkdir(parents=True, exist_ok=True)
        config = write_config(
            base / "node" / "foundation.toml", pools={pool: {**POOL, **(pool_table or {})}}, node="chaos",
            nats_url=env.url, nats=nats,
            # Kills are the point: the root must not give up on a burst of them.
            supervisor={"max_restarts": 1000, "max_seconds": 10},
        )
        node = RestartableNode(config)
        for attempt in range(3):
            try:
                stack.enter_context(node)
                break
            except NodeFailedError as exc:
                # A cluster that just formed may still count a peer offline for
                # placement; the node then exits 2 naming it. Anything else is real.
                if "no suitable peers" not in str(exc) or attempt == 2:
                    raise
                time.sleep(1.0)
        env.node, env.node_name = node, node.name
        yield env


def _wait_peers_current(cluster: LocalCluster, timeout: float = 30.0) -> None:
    """Wait until the meta leader sees every other server current and online.

    A cluster that just formed can still count a peer as offline for a
    moment, and a stream declared then at R3 is refused ("no suitable peers").
    """
    deadline = time.monotonic() + timeout
    want = len(cluster.names) - 1
    while time.monotonic() < deadline:
        for name in cluster.names:
            try:
                with urllib.request.urlopen(f"{cluster.server(name).monitor_url}/jsz", timeout=2) as resp:
                    meta = json.loads(resp.read()).get("meta_cluster") or {}
            except (OSError, ValueError):
                continue
            peers = meta.get("replicas") or []
            if meta.get("leader") == name and len(peers) == want and all(p.get("current") and not p.get("offline") for p in peers):
                return
        time.sleep(0.05)  # polling the servers' monitoring: there is no event to wait on
    raise ChaosError(f"the cluster's meta leader did not see all {want + 1} servers current within {timeout:g}s")


def _delete(client: ToxiproxyClient | None, proxy: str) -> None:
    if client is not None:
        with contextlib.suppress(FoundationError):
            client.delete(proxy)
