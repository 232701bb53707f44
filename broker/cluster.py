"""A local NATS cluster: N ``nats-server``s with routes and JetStream on this machine.

For trying a multi-host set-up on one host, for the tests and for the chaos
suite, which all use this one runner (``foundation cluster up`` wraps it).

API::

    with LocalCluster(Path("var/cluster"), servers=3) as cluster:  # ready on return
        cluster.url                 # "nats://127.0.0.1:p1,nats://…:p2,nats://…:p3"
        cluster.urls                # the same as a list, in server order
        cluster.names               # ["n1", "n2", "n3"]: server names, stable
        cluster.server("n2").url    # one server's client URL (.monitor_url too)
        cluster.leader("TASKS")     # name of the server leading a stream (or
                                    # "KV_agent_state" for a bucket); waits for one
        cluster.kill("n2")          # SIGKILL, as a crash or power loss would
        cluster.stop_server("n2")   # SIGTERM: clean shutdown
        cluster.restart("n2")       # start again, same ports and store; returns
                                    # when it is back in the cluster and current
    # leaving the block stops every server

Each server ``nK`` keeps its store under ``DIR/nK`` and its log in
``DIR/nK/nats-server.log``. Client and monitoring ports are picked by the
server (``-1``) at the first start and kept across restarts, so clients that
know the URL list find a restarted server again. Cluster (route) ports must be
known before any server starts, since each lists the others' routes: they are
picked free by binding port 0 just before, a window in which another process
could take one (the start then fails with the server's log named).

:meth:`LocalCluster.start` returns once every server passes the full
``/healthz`` (JetStream enabled, meta leader known, its streams current), all
of them agree on one meta leader and that leader sees every other server
current: a stream created right after ``start`` gets its replicas.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from broker.server import EmbeddedServer, ServerAddress, ServerNotReadyError, ServerOptions
from config.errors import BrokerError


class ClusterError(BrokerError):
    """The local cluster could not be started, or asked about a server it lacks."""


def _free_ports(n: int, host: str) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _get_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, json.JSONDecodeError):
        return None


class LocalCluster:
    """N clustered JetStream servers owned by this process.

    Args:
        dir: where the servers' stores and logs go (created).
        servers: how many (3 or 5 make sense; 1 is a cluster of one).
        host: address every port binds to.
        name: the cluster name.
        sync: JetStream ``sync_interval`` of every server ("always", "1s", …;
            empty keeps the server default).
    """

    def __init__(self, dir: Path, servers: int = 3, *, host: str = "127.0.0.1", name: str = "foundation", sync: str = "") -> None:
        if servers < 1:
            raise ClusterError(f"a cluster needs at least one server, got {servers}")
        self.dir = Path(dir)
        self.host = host
        self.names = [f"n{i + 1}" for i in range(servers)]
        cluster_ports = _free_ports(servers, host)
        routes = tuple(f"nats://{host}:{p}" for p in cluster_ports)
        self._servers: dict[str, EmbeddedServer] = {}
        for name_, port in zip(self.names, cluster_ports):
            opts = ServerOptions(
                store_dir=self.dir / name_,
                host=host,
                name=name_,
                sync=sync,
                cluster_name=name,
                cluster_port=port,
                routes=routes,
            )
            self._servers[name_] = EmbeddedServer(opts)
        self._addresses: dict[str, ServerAddress] = {}

    # -- addresses --------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        """Client URLs of every server (running or not), in server order."""
        if len(self._addresses) < len(self.names):
            raise ClusterError("the cluster has not been started")
        return [self._addresses[n].url for n in self.names]

    @property
    def url(self) -> str:
        """The comma-separated server list, as ``nats.url`` takes it."""
        return ",".join(self.urls)

    def server(self, name: str) -> ServerAddress:
        """The client and monitoring URLs of server ``name``."""
        self._check(name)
        if name not in self._addresses:
            raise ClusterError(f"server {name} has not been started")
        return self._addresses[name]

    def running(self, name: str) -> bool:
        self._check(name)
        proc = self._servers[name].proc
        return proc is not None and proc.poll() is None

    def pid(self, name: str) -> int | None:
        self._check(name)
        proc = self._servers[name].proc
        return proc.pid if proc is not None else None

    # -- lifecycle --------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start every server; return when the cluster is ready (see module doc).

        Raises:
            ServerNotReadyError: a server exited or the cluster did not form in time.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        try:
            # All at once: a clustered server only turns healthy once a
            # quorum of its peers is up, so starting them one by one would wait.
            for srv in self._servers.values():
                srv.opts.prepare()
                srv.launch()
            for name, srv in self._servers.items():
                self._ready(name, max(1.0, deadline - time.monotonic()))
            self._wait_meta_leader(deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every running server (SIGTERM, then SIGKILL after a bound)."""
        for srv in self._servers.values():
            srv.stop()

    def stop_server(self, name: str) -> None:
        """Stop one server cleanly (SIGTERM)."""
        self._check(name)
        self._servers[name].stop()

    def kill(self, name: str) -> None:
        """SIGKILL one server: what a crash or a power loss looks like to its peers."""
        self._check(name)
        self._servers[name].kill()

    def restart(self, name: str, timeout: float = 30.0) -> ServerAddress:
        """Start a stopped or killed server again on its ports and store.

        Returns when it passes the full health check: back in the cluster and
        current with the streams it holds a replica of.
        """
        self._check(name)
        srv = self._servers[name]
        if self.running(name):
            raise ClusterError(f"server {name} is running; stop or kill it first")
        srv.opts.prepare()
        srv.launch()
        return self._ready(name, timeout)

    def _ready(self, name: str, timeout: float) -> ServerAddress:
        srv = self._servers[name]
        addr = srv.wait(timeout)
        # Keep the ports it picked: a restart must come back where clients look.
        port = int(addr.url.rsplit(":", 1)[1])
        monitor_port = int(addr.monitor_url.rsplit(":", 1)[1])
        srv.opts = dataclasses.replace(srv.opts, port=port, monitor_port=monitor_port)
        self._addresses[name] = addr
        return addr

    def _wait_meta_leader(self, deadline: float) -> None:
        """Until every server names the same meta leader and that leader sees
        every other server current and online.

        A cluster that just formed can count a peer offline for a moment;
        a stream declared with all servers' replicas then is refused ("no
        suitable peers").
        """
        delay = 0.01
        want = len(self.names) - 1
        while True:
            metas = {name: (_get_json(f"{self._addresses[name].monitor_url}/jsz") or {}).get("meta_cluster") or {} for name in self.names}
            leaders = {meta.get("leader") or "" for meta in metas.values()}
            if len(leaders) == 1 and "" not in leaders:
                leader = next(iter(leaders))
                peers = metas.get(leader, {}).get("replicas") or []
                if len(peers) == want and all(p.get("current") and not p.get("offline") for p in peers):
                    return
            if time.monotonic() > deadline:
                raise ServerNotReadyError(f"the cluster's servers did not agree on a JetStream meta leader seeing all of them current (saw leaders {sorted(leaders)}); see the logs under {self.dir}")
            # Polling external processes: there is no event to wait on.
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    # -- who leads what ---------------------------------------------------

    def leader(self, stream: str, timeout: float = 15.0) -> str:
        """Name of the server leading ``stream`` (``KV_<bucket>`` for a bucket).

        Asks the running servers' monitoring endpoints; waits up to
        ``timeout`` while the stream has no leader (an election under way).

        Raises:
            ClusterError: no running server reports a leader in time.
        """
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            for name in self.names:
                if not self.running(name):
                    continue
                leader = self._leader_seen_by(name, stream)
                if leader and self.running(leader):
                    return leader
            if time.monotonic() > deadline:
                raise ClusterError(f"no server reports a leader for stream {stream} after {timeout:g}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _leader_seen_by(self, name: str, stream: str) -> str:
        jsz = _get_json(f"{self._addresses[name].monitor_url}/jsz?accounts=true&streams=true") or {}
        for account in jsz.get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail.get("name") == stream:
                    return str((detail.get("cluster") or {}).get("leader") or "")
        return ""

    def _check(self, name: str) -> None:
        if name not in self._servers:
            raise ClusterError(f"no server {name!r} in this cluster; servers: {', '.join(self.names)}")

    def __enter__(self) -> "LocalCluster":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
