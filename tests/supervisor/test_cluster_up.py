"""The issue's "done" path: ``foundation cluster up --servers 3`` and two ``foundation up``
nodes pointed at it serve tasks that a plain NATS client publishes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import nats
import pytest

from broker import catalog, jetstream, subjects
from supervisor.harness import FOUNDATION
from tests.supervisor.cluster import start_node, stop_all

pytestmark = pytest.mark.timeout(180)


async def test_cluster_up_and_two_nodes_serve_a_plain_client(tmp_path: Path) -> None:
    cluster = subprocess.Popen([FOUNDATION, "cluster", "up", "--servers", "3", "--dir", str(tmp_path / "cluster")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    nodes = []
    try:
        assert cluster.stdout is not None
        lines = []
        while not (lines and lines[-1].startswith("nats: ")):
            line = await asyncio.to_thread(cluster.stdout.readline)
            assert line, "foundation cluster up ended early:\n" + "".join(lines)
            lines.append(line)
        urls = lines[-1].split(" ", 1)[1].strip()
        pool = {"p": {"handler": "workers.examples:echo", "size": 1}}
        for name in ("a", "b"):
            nodes.append(await start_node(tmp_path, name, urls, {k: dict(v) for k, v in pool.items()}, nats={"replicas": 3}))

        # Any NATS client: nats-py with none of this project's helpers.
        nc = await nats.connect(servers=urls.split(","))
        js = nc.jetstream()
        results = await nc.subscribe("results.p")  # the stored results, as a core subscriber sees them
        for i in range(20):
            await js.publish("tasks.p", b'{"n": %d}' % i, headers={"Nats-Msg-Id": f"plain-{i}"})
        got = {}
        while len(got) < 20:
            msg = await results.next_msg(timeout=60)
            got[msg.headers["Nats-Msg-Id"]] = msg.data
        assert sorted(got) == sorted(f"plain-{i}" for i in range(20))
        info = await jetstream(nc).stream_info(catalog.bucket_stream(subjects.AGENT_STATE_BUCKET))
        assert info.config.num_replicas == 3
        await nc.close()
    finally:
        codes = await stop_all(*nodes)
        if cluster.poll() is None:
            cluster.send_signal(signal.SIGINT)
        cluster_code = cluster.wait(60)
    assert codes == [0, 0]
    assert cluster_code == 0
