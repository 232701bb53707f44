"""Replicas everywhere: the catalog declared on a real 3-server cluster, changed, and refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from nats.js.api import RetentionPolicy, StreamConfig

from broker import DeclarationError, LocalCluster, catalog, connect, declare_all, jetstream, key_value, subjects
from config import NatsConfig
from supervisor.harness import FOUNDATION, write_config

ALL = sorted([s.name for s in catalog.streams(NatsConfig())] + [catalog.bucket_stream(b) for b in catalog.BUCKETS])


async def replicas(js) -> dict[str, int]:
    # One by one: a stream list taken while replicas move may leave some out.
    assert {s.config.name for s in await js.streams_info()} <= set(ALL)
    return {name: (await js.stream_info(name)).config.num_replicas for name in ALL}


async def test_every_stream_and_bucket_carries_the_configured_replicas(nats_cluster: LocalCluster) -> None:
    nc = await connect(nats_cluster.url, name="test")
    try:
        js = jetstream(nc)
        await declare_all(js, NatsConfig(url=nats_cluster.url, replicas=3))
        assert await replicas(js) == {name: 3 for name in ALL}
        await declare_all(js, NatsConfig(url=nats_cluster.url, replicas=3))  # a second node: no change, no error
        info = await js.stream_info(catalog.bucket_stream(subjects.REGISTRY_BUCKET))
        assert info.config.allow_msg_ttl and info.cluster is not None and len(info.cluster.replicas) == 2
    finally:
        await nc.close()


async def test_changing_replicas_updates_existing_objects_and_keeps_their_data(nats_cluster: LocalCluster) -> None:
    nc = await connect(nats_cluster.url, name="test")
    try:
        js = jetstream(nc)
        # A bucket opened before any node declared it starts with one replica.
        kv = await key_value(js, subjects.VARIABLES_BUCKET)
        await kv.put("x", b"1")
        await declare_all(js, NatsConfig(url=nats_cluster.url, replicas=1))
        await js.publish(subjects.tasks("p"), b"{}", headers={subjects.MSG_ID: "t1"})
        assert await replicas(js) == {name: 1 for name in ALL}

        await declare_all(js, NatsConfig(url=nats_cluster.url, replicas=3))
        assert await replicas(js) == {name: 3 for name in ALL}
        assert (await js.stream_info(subjects.TASKS_STREAM)).state.messages == 1
        assert (await kv.get("x")).value == b"1"
        info = await js.stream_info(catalog.bucket_stream(subjects.VARIABLES_BUCKET))
        assert info.config.max_msgs_per_subject == catalog.VARIABLES_HISTORY

        await declare_all(js, NatsConfig(url=nats_cluster.url, replicas=2))
        assert await replicas(js) == {name: 2 for name in ALL}
    finally:
        await nc.close()


async def test_more_replicas_than_servers_is_a_clear_error(nats_cluster: LocalCluster) -> None:
    nc = await connect(nats_cluster.url, name="test")
    try:
        with pytest.raises(DeclarationError, match=r"cannot create stream TASKS: .*fewer than 5 servers with JetStream online: set nats.replicas to at most the cluster size"):
            await declare_all(jetstream(nc), NatsConfig(url=nats_cluster.url, replicas=5))
    finally:
        await nc.close()


async def test_a_setting_nats_cannot_change_names_object_difference_and_fix(nc) -> None:
    js = jetstream(nc)
    await js.add_stream(StreamConfig(name=subjects.TASKS_STREAM, subjects=["tasks.>"], retention=RetentionPolicy.LIMITS))
    with pytest.raises(DeclarationError, match=r"stream TASKS: retention is 'limits', Foundation declares 'workqueue'\. .*nats stream rm TASKS"):
        await declare_all(js, NatsConfig())


def test_foundation_up_exits_2_when_replicas_exceed_a_single_server(tmp_path: Path, nats_url: str) -> None:
    cfg = write_config(tmp_path / "f.toml", nats_url=nats_url, pools={"p": {"handler": "workers.examples:echo"}}, nats={"replicas": 3})
    proc = subprocess.run([FOUNDATION, "up", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot create stream TASKS: replicas > 1 not supported in non-clustered mode; NATS here is a single server without clustering: set nats.replicas = 1" in proc.stdout
