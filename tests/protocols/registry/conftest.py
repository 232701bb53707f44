"""Backends for the registry tests: each test runs once on memory, once on the KV bucket.

``backends()`` hands out views of one shared store: the same
``MemoryBackend``, or a ``KVBackend`` on a fresh connection each time (each
connection stands in for another node's process).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from broker import connect
from protocols.registry import KVBackend, MemoryBackend, RegistryBackend

BackendFactory = Callable[[], Awaitable[RegistryBackend]]


@pytest.fixture(params=["memory", "kv"])
async def backends(request: pytest.FixtureRequest) -> AsyncIterator[BackendFactory]:
    if request.param == "memory":
        shared = MemoryBackend()

        async def memory() -> RegistryBackend:
            return shared

        yield memory
        await shared.close()
        return

    url = request.getfixturevalue("nats_url")
    clients = []

    async def kv() -> RegistryBackend:
        nc = await connect(url, name=f"registry-test-{len(clients)}")
        clients.append(nc)
        return await KVBackend.open(nc)

    yield kv
    for nc in clients:
        await nc.close()


@pytest.fixture
async def backend(backends: BackendFactory) -> RegistryBackend:
    return await backends()
