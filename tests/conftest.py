"""Shared fixtures: a real nats-server per test, on free ports, in a temp store."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from broker import EmbeddedServer, LocalCluster, ServerOptions, connect, declare_all, jetstream, set_lazy_replicas
from config import NatsConfig


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A running single-node JetStream server; stopped after the test."""
    server = EmbeddedServer(ServerOptions(store_dir=tmp_path / "nats"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A running three-server JetStream cluster (``broker.cluster``); stopped after the test."""
    cluster = LocalCluster(tmp_path / "cluster", servers=3)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def nats_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of the test's NATS: one server, or with ``FOUNDATION_TEST_CLUSTER=1``
    (``make cluster-protocols``) a 3-server cluster whose streams and buckets
    all have 3 replicas, those a test creates on first use included."""
    if not os.environ.get("FOUNDATION_TEST_CLUSTER"):
        yield request.getfixturevalue("nats_server").url
        return
    cluster = request.getfixturevalue("nats_cluster")

    async def declare() -> None:
        client = await connect(cluster.url, name="test setup")
        await declare_all(jetstream(client), NatsConfig(url=cluster.url, replicas=3))
        await client.close()

    # In a thread of its own: the fixture may be set up inside a running loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, declare()).result()
    set_lazy_replicas(3)
    try:
        yield cluster.url
    finally:
        set_lazy_replicas(1)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator:
    """A client connection to the test server."""
    client = await connect(nats_url, name="test")
    try:
        yield client
    finally:
        await client.close()
