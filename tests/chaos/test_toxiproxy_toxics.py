"""Each toxic does to real TCP connections what it claims; disabling a proxy cuts and refuses.

An echo server is the upstream; a client talks through a proxy of
:class:`ToxiproxyServer`. Delays are checked as lower bounds only (a loaded
machine makes things slower, never faster).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from chaos.toxiproxy import ToxiproxyClient, ToxiproxyServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def toxiproxy() -> Iterator[ToxiproxyClient]:
    with ToxiproxyServer() as srv:
        yield ToxiproxyClient(srv.url)


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()


async def dial(proxy: dict) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = proxy["listen"].rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 20)


async def roundtrip(proxy: dict, data: bytes = b"ping") -> tuple[bytes, float]:
    reader, writer = await dial(proxy)
    t0 = time.monotonic()
    writer.write(data)
    got = await asyncio.wait_for(reader.readexactly(len(data)), 20)
    took = time.monotonic() - t0
    writer.close()
    return got, took


async def test_plain_proxy_passes_data(toxiproxy: ToxiproxyClient, echo: str) -> None:
    proxy = toxiproxy.create("p", echo)
    assert (await roundtrip(proxy, b"x" * 100_000))[0] == b"x" * 100_000


@pytest.mark.parametrize("stream", ["downstream", "upstream"])
async def test_latency_and_jitter(toxiproxy: ToxiproxyClient, echo: str, stream: str) -> None:
    proxy = toxiproxy.create("p", echo)
    toxiproxy.add_toxic("p", "latency", stream=stream, latency=300, jitter=50)
    got, took = await roundtrip(proxy)
    assert got == b"ping" and took >= 0.25


async def test_toxic_acts_on_open_connections(toxiproxy: ToxiproxyClient, echo: str) -> None:
    proxy = toxiproxy.create("p", echo)
    reader, writer = await dial(proxy)
    writer.write(b"a")
    assert await reader.readexactly(1) == b"a"
    toxiproxy.add_toxic("p", "latency", latency=300)
    t0 = time.monotonic()
    writer.write(b"b")
    assert await asyncio.wait_for(reader.readexactly(1), 20) == b"b"
    assert time.monotonic() - t0 >= 0.3
    writer.close()


async def test_bandwidth(toxiproxy: ToxiproxyClient, echo: str) -> None:
    proxy = toxiproxy.create("p", echo)
    toxiproxy.add_toxic("p", "bandwidth", rate=20)  # 20 KB/s: 10 KB take 0.5 s
    got, took = await roundtrip(proxy, b"y" * 10_000)
    assert got == b"y" * 10_000 and took >= 0.45


async def test_slow_close(toxiproxy: ToxiproxyClient, echo: str) -> None:
    proxy = toxiproxy.create("p", echo)
    toxiproxy.add_toxic("p", "slow_close", delay=400)
    reader, writer = await dial(proxy)
    t0 = time.monotonic()
    writer.write_eof()  # the echo server closes; the proxy passes the close on 400 ms late
    assert await read_all(reader) == b""
    assert time.monotonic() - t0 >= 0.4
    writer.close()


async def test_timeout_drops_data_then_closes(toxiproxy: ToxiproxyClient, echo: str) -> None:
    proxy = toxiproxy.create("p", echo)
    toxiproxy.add_toxic("p", "timeout", timeout=300)
    reader, writer = await dial(proxy)
    t0 = time.monotonic()
    writer.write(b"lost")
    assert await read_all(reader) == b""  # closed, and nothing came back
    assert time.monotonic() - t0 >= 0.3
    writer.close()


async def test_timeout_zero_drops_until_removed(echo: str) -> None:
    with ToxiproxyServer() as srv:
        toxiproxy = ToxiproxyClient(srv.url)
        proxy = toxiproxy.create("p", echo)
        toxiproxy.add_toxic("p", "timeout", stream="upstream", timeout=0)
        reader, writer = await dial(proxy)
        writer.write(b"dropped")
        # Wait until the proxy has swallowed it (its own count), then lift the toxic.
        links = srv.api.proxies.by_name["p"].links
        deadline = time.monotonic() + 20
        while not any(link.dropped == 7 for link in list(links)):
            assert time.monotonic() < deadline, "the proxy never read the chunk"
            await asyncio.sleep(0.01)
        toxiproxy.remove_toxic("p", "timeout_upstream")
        writer.write(b"kept")
        assert await asyncio.wait_for(reader.readexactly(4), 20) == b"kept"
        writer.close()


async def test_reset_peer(toxiproxy: ToxiproxyClient, echo: str) -> None:
    proxy = toxiproxy.create("p", echo)
    toxiproxy.add_toxic("p", "reset_peer", timeout=100)
    reader, writer = await dial(proxy)
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 20)
    writer.close()


async def test_slicer(toxiproxy: ToxiproxyClient, echo: str) -> None:
    proxy = toxiproxy.create("p", echo)
    toxiproxy.add_toxic("p", "slicer", average_size=10, size_variation=2, delay=50_000)  # 50 ms apart
    got, took = await roundtrip(proxy, b"z" * 100)  # at least 8 slices: 7 pauses
    assert got == b"z" * 100 and took >= 0.35


@pytest.mark.parametrize("stream", ["downstream", "upstream"])
async def test_limit_data(toxiproxy: ToxiproxyClient, echo: str, stream: str) -> None:
    proxy = toxiproxy.create("p", echo)
    toxiproxy.add_toxic("p", "limit_data", stream=stream, bytes=10)
    reader, writer = await dial(proxy)
    writer.write(b"0123456789abcdef")
    assert await read_all(reader) == b"0123456789"
    writer.close()


async def test_toxicity_zero_never_applies(toxiproxy: ToxiproxyClient, echo: str) -> None:
    proxy = toxiproxy.create("p", echo)
    toxiproxy.add_toxic("p", "timeout", timeout=0, toxicity=0.0)
    assert (await roundtrip(proxy))[0] == b"ping"


async def test_disable_closes_and_refuses(toxiproxy: ToxiproxyClient, echo: str) -> None:
    proxy = toxiproxy.create("p", echo)
    reader, writer = await dial(proxy)
    writer.write(b"a")
    assert await reader.readexactly(1) == b"a"
    toxiproxy.set_enabled("p", False)
    assert await read_all(reader) == b""  # the open connection is closed
    with pytest.raises(ConnectionRefusedError):
        await dial(proxy)
    toxiproxy.set_enabled("p", True)
    assert (await roundtrip(proxy))[0] == b"ping"  # back on the same port
    writer.close()
