"""Each nemesis injects what it claims and heals it.

* a partition really drops packets between the namespaces it separates (TCP
  to the other side's route port fails), and only those; healing restores them;
* a paused nats-server really stops answering (its monitoring port) until SIGCONT;
* a killed one is gone and restarts as a cluster member;
* a link fault's ``down`` refuses client connections, ``latency`` slows them.

Namespaces need root, ``ip`` and ``nft``: without them these skip with the
reason — never under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from broker import LocalCluster, connect, declare_streams, jetstream
from config.schema import NatsConfig
from chaos import Env, KillNats, LinkFault, NetnsCluster, Network, Partition, PauseNats, netns
from chaos.toxiproxy import ToxiproxyClient, ToxiproxyServer

pytestmark = pytest.mark.timeout(120)


def need_namespaces() -> None:
    why = netns.unavailable()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs network namespaces: {why}")
        pytest.skip(why)


@pytest.fixture
def net_cluster(tmp_path: Path) -> Iterator[NetnsCluster]:
    need_namespaces()
    with Network(["n1", "n2", "n3"]) as network, NetnsCluster(tmp_path / "c", network) as cluster:
        yield cluster


def reaches(network: Network, src: str, dst: str) -> bool:
    """Can ``src``'s namespace open TCP to ``dst``'s route port? (1 s: a dropped SYN never answers.)"""
    code = f"import socket; socket.create_connection(({network.address(dst)!r}, 6222), timeout=1)"
    return subprocess.run([*network.exec_prefix(src), sys.executable, "-c", code], capture_output=True).returncode == 0


def becomes(pid: int, stopped: bool, timeout: float = 20.0) -> bool:
    """Wait for the kernel to show ``pid`` stopped (or not): a signal acts when the process is next scheduled."""
    deadline = time.monotonic() + timeout
    while (psutil.Process(pid).status() == psutil.STATUS_STOPPED) != stopped:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def dies(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False


def answers(monitor_url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{monitor_url}/varz", timeout=timeout):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("mode", ["minority", "leader", "bridge"])
async def test_partition_drops_packets_and_heals(net_cluster: NetnsCluster, mode: str) -> None:
    network = net_cluster.network
    if mode == "leader":
        nc = await connect(net_cluster.url, name="test")
        try:
            await declare_streams(jetstream(nc), NatsConfig(), replicas=3)
        finally:
            await nc.close()
    env = Env(url=net_cluster.url, pool="p", cluster=net_cluster, network=network)
    pairs = [(a, b) for a in network.members for b in network.members if a != b]
    assert all(reaches(network, a, b) for a, b in pairs)
    nemesis = Partition(env, random.Random(3), mode=mode)
    label = await nemesis.inject()
    cut = {(a, b) for a, b in pairs if not reaches(network, a, b)}
    if mode == "bridge":
        assert len(cut) == 2 and label.startswith("bridge: ")  # one pair, both ways; the third sees both
        (a, b), = {tuple(sorted(p)) for p in cut}
        assert f"{a} ✕ {b}" in label or f"{b} ✕ {a}" in label
    else:
        alone = label.split()[1]
        assert cut == {(alone, o) for o in network.members if o != alone} | {(o, alone) for o in network.members if o != alone}
        if mode == "leader":
            assert "TASKS leader" in label
    # This process still reaches every server: only the routes are cut.
    assert all(answers(net_cluster.server(n).monitor_url, 5) for n in net_cluster.names)
    assert "drop" in "".join(network.rules(m) for m in network.members)
    await nemesis.heal()
    assert all(reaches(network, a, b) for a, b in pairs)
    assert all(network.rules(m) == "" for m in network.members)


def test_network_close_removes_its_namespaces(tmp_path: Path) -> None:
    need_namespaces()
    with Network(["a", "b"]) as network:
        made = [network.namespace(m) for m in network.members]
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert all(ns in listed for ns in made)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in listed for ns in made)
    assert network.bridge not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout


async def test_pause_stops_answers_until_continued(nats_cluster: LocalCluster) -> None:
    env = Env(url=nats_cluster.url, pool="p", cluster=nats_cluster)
    nemesis = PauseNats(env, random.Random(1), leader=False)
    label = await nemesis.inject()
    paused = label.split()[2]
    monitor = nats_cluster.server(paused).monitor_url
    try:
        assert not answers(monitor)
        assert all(answers(nats_cluster.server(n).monitor_url, 5) for n in nats_cluster.names if n != paused)
    finally:
        await nemesis.heal()
    assert answers(monitor, 10)


async def test_kill_nats_and_restart(nats_cluster: LocalCluster) -> None:
    env = Env(url=nats_cluster.url, pool="p", cluster=nats_cluster)
    nemesis = KillNats(env, random.Random(1), leader=False)
    label = await nemesis.inject()
    killed = label.split()[3]
    assert not nats_cluster.running(killed)
    await nemesis.heal()
    assert nats_cluster.running(killed) and answers(nats_cluster.server(killed).monitor_url, 10)


async def test_link_faults_down_and_latency(nats_server) -> None:
    with ToxiproxyServer() as srv:
        client = ToxiproxyClient(srv.url)
        listen = client.create("n1", nats_server.url.removeprefix("nats://"))["listen"]
        host, port = listen.rsplit(":", 1)
        env = Env(url=f"nats://{listen}", pool="p", toxiproxy=client, proxies=["n1"])

        async def info_after() -> float:
            t0 = time.monotonic()
            reader, writer = await asyncio.open_connection(host, int(port))
            assert (await asyncio.wait_for(reader.readline(), 20)).startswith(b"INFO ")
            writer.close()
            return time.monotonic() - t0

        down = LinkFault(env, random.Random(1), kind="down")
        assert await down.inject() == "client links down"
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(host, int(port))
        await down.heal()
        await info_after()
        slow = LinkFault(env, random.Random(1), kind="latency")
        await slow.inject()
        assert await info_after() >= 0.2  # 300 ms ± 100 on the server's INFO
        await slow.heal()
        assert client._call("GET", "/proxies/n1/toxics") == []


async def test_process_nemeses_on_a_real_node(tmp_path: Path) -> None:
    """kill -9 and SIGSTOP of a worker and of the node's supervisor: each really happens and is healed."""
    from chaos import KillSupervisor, KillWorker, PauseSupervisor, PauseWorker
    from chaos.env import POOL, RestartableNode
    from supervisor.harness import write_config

    config = write_config(tmp_path / "foundation.toml", pools={"p": {**POOL, "size": 2}}, node="nem",
                          supervisor={"max_restarts": 100, "max_seconds": 10})
    with RestartableNode(config) as node:
        nc = await connect(node.proc.url, name="test")
        env = Env(url=node.proc.url, pool="p", node_name=node.name, node=node, nc=nc)
        rng = random.Random(2)
        try:
            pids = await env.worker_pids()
            pause = PauseWorker(env, rng)
            slot = (await pause.inject()).split()[-1]
            assert becomes(pids[slot], stopped=True)
            await pause.heal()
            assert becomes(pids[slot], stopped=False)

            kill = KillWorker(env, rng)
            pids = await env.worker_pids()
            slot = (await kill.inject()).split()[-1]
            assert dies(pids[slot])
            await kill.heal()
            assert (await env.worker_pids())[slot] != pids[slot]

            stop = PauseSupervisor(env, rng)
            await stop.inject()
            assert becomes(node.pid, stopped=True)
            await stop.heal()
            assert becomes(node.pid, stopped=False)
        finally:
            await nc.close()
        old = node.pid
        crash = KillSupervisor(env, rng)
        await crash.inject()
        assert not node.alive
        await crash.heal()
        assert node.alive and node.pid != old
