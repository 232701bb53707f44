"""A :class:`~broker.cluster.LocalCluster` whose servers each run in a network namespace.

Server ``nK`` runs inside namespace ``Network.namespace("nK")`` and listens
on its own address there (client 4222, routes 6222, monitoring 8222): every
server has the same ports on a different address, so nothing races for free
ports, and a partition between namespaces cuts the routes between servers
while this process (the clients, the node) still reaches each of them.
Everything else — kill, restart, leader — is the local cluster's.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from broker import EmbeddedServer, LocalCluster, ServerOptions
from broker.server import die_with_parent
from chaos.netns import Network

CLIENT_PORT, CLUSTER_PORT, MONITOR_PORT = 4222, 6222, 8222


class _NamespacedServer(EmbeddedServer):
    """An embedded server started through ``ip netns exec`` (which execs it: same pid)."""

    def __init__(self, opts: ServerOptions, prefix: list[str]) -> None:
        super().__init__(opts)
        self.prefix = prefix

    def launch(self) -> None:
        self.proc = subprocess.Popen(
            [*self.prefix, *self.opts.argv()],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )


class NetnsCluster(LocalCluster):
    """N servers, one per namespace of ``network`` (which must be open and name them n1…nN).

    Args:
        dir: stores and logs, as for :class:`LocalCluster`.
        network: the namespaces; its members are the server names.
        sync: JetStream ``sync_interval``.
    """

    def __init__(self, dir: Path, network: Network, *, name: str = "foundation", sync: str = "") -> None:
        super().__init__(dir, len(network.members), name=name, sync=sync)
        if list(network.members) != self.names:
            raise ValueError(f"the network's members must be {self.names}, got {network.members}")
        self.network = network
        routes = tuple(f"nats://{network.address(n)}:{CLUSTER_PORT}" for n in self.names)
        # Replace the servers the local cluster planned on 127.0.0.1 with namespaced ones.
        self._servers = {
            n: _NamespacedServer(
                ServerOptions(
                    store_dir=self.dir / n, port=CLIENT_PORT, monitor_port=MONITOR_PORT,
                    host=network.address(n), name=n, sync=sync, cluster_name=name,
                    cluster_port=CLUSTER_PORT, routes=routes,
                ),
                network.exec_prefix(n),
            )
            for n in self.names
        }
