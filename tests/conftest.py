"""Shared fixtures: a real nats-server per test, on free ports, in a temp store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from broker import EmbeddedServer, LocalCluster, ServerOptions, connect


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
def nats_url(nats_server: EmbeddedServer) -> str:
    return nats_server.url


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator:
    """A client connection to the test server."""
    client = await connect(nats_url, name="test")
    try:
        yield client
    finally:
        await client.close()
