"""The local cluster runner: three real servers, R3 streams, kill -9 and restart of the leader."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from nats.js.api import StreamConfig

from broker import ClusterError, LocalCluster, connect, jetstream, retrying

FOUNDATION = str(Path(sys.executable).parent / "foundation")


async def test_r3_stream_survives_kill_of_its_leader(nats_cluster: LocalCluster) -> None:
    assert nats_cluster.names == ["n1", "n2", "n3"]
    assert nats_cluster.url == ",".join(nats_cluster.urls)
    nc = await connect(nats_cluster.url, name="test")
    try:
        js = jetstream(nc)
        await js.add_stream(StreamConfig(name="S", subjects=["s.>"], num_replicas=3))
        acks = [await js.publish("s.x", str(i).encode()) for i in range(10)]
        assert [a.seq for a in acks] == list(range(1, 11))
        leader = nats_cluster.leader("S")
        assert leader in nats_cluster.names

        nats_cluster.kill(leader)
        assert not nats_cluster.running(leader)
        successor = nats_cluster.leader("S", timeout=30)
        assert successor != leader
        # The client may be moving off the dead server: calls retry until answered.
        info = await retrying(lambda: js.stream_info("S"), what="stream info")
        assert info.state.messages == 10

        nats_cluster.restart(leader)
        assert nats_cluster.running(leader)
        info = await retrying(lambda: js.stream_info("S"), what="stream info")
        assert info.cluster is not None
        assert sorted([info.cluster.leader] + [p.name for p in info.cluster.replicas]) == ["n1", "n2", "n3"]
    finally:
        await nc.close()


def test_asking_for_an_unknown_server_names_the_known_ones(nats_cluster: LocalCluster) -> None:
    with pytest.raises(ClusterError, match="no server 'n9' in this cluster; servers: n1, n2, n3"):
        nats_cluster.kill("n9")
    with pytest.raises(ClusterError, match="n1 is running"):
        nats_cluster.restart("n1")


def test_sync_always_reaches_every_server(tmp_path: Path) -> None:
    import json
    import urllib.request

    with LocalCluster(tmp_path / "c", servers=2, sync="always") as cluster:
        for name in cluster.names:
            with urllib.request.urlopen(f"{cluster.server(name).monitor_url}/jsz") as resp:
                assert json.loads(resp.read())["config"].get("sync_always") is True


def test_cli_cluster_up_prints_urls_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen([FOUNDATION, "cluster", "up", "--servers", "3", "--dir", str(tmp_path / "c")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:  # blocks until the line arrives or the process ends
            lines.append(line)
            if line.startswith("nats: "):
                break
        assert lines and lines[-1].startswith("nats: "), "".join(lines)
        urls = lines[-1].split(" ", 1)[1].strip().split(",")
        assert len(urls) == 3 and all(u.startswith("nats://127.0.0.1:") for u in urls)
        pids = [int(p.name.split("_")[1].split(".")[0]) for p in (tmp_path / "c").glob("n*/ports/*.ports")]
        assert len(pids) == 3
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_sync_keeps_a_config_file_given_by_the_caller(tmp_path: Path) -> None:
    import json
    import urllib.request

    from broker import EmbeddedServer, NatsUnavailableError, ServerOptions

    auth = tmp_path / "auth" / "auth.conf"
    auth.parent.mkdir()
    auth.write_text('authorization { token: "s3cret" }\n')
    opts = ServerOptions(store_dir=tmp_path / "nats", sync="always", extra_args=("--config", str(auth)))
    with EmbeddedServer(opts) as server:
        with urllib.request.urlopen(f"{server.address.monitor_url}/jsz") as resp:
            assert json.loads(resp.read())["config"].get("sync_always") is True
        with pytest.raises(NatsUnavailableError):
            await connect(server.url, name="no token", connect_timeout=2, reconnect=False)
        nc = await connect(server.url.replace("nats://", "nats://s3cret@"), name="token")
        await nc.close()
