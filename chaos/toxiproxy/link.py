"""One proxied connection: client ⇄ proxy ⇄ upstream, with the proxy's toxics applied.

Each direction is a pump: a reader stamps every chunk with its arrival time
and queues it; a writer applies the direction's toxics (in the order they
were added) to each chunk and forwards it. Toxics are read from the proxy on
every chunk, so adding, updating or removing one acts on open connections
at once, as in toxiproxy. Whether a toxic applies to this connection is
drawn once (its ``toxicity``) and kept until it is removed.

The time-driven toxics (``timeout``, ``reset_peer``) act even without
traffic: :meth:`Link.toxics_changed` (called by the proxy on every change)
arms one timer per active toxic and cancels timers of toxics removed.

When a direction ends (EOF, error, ``limit_data`` reached) its end is passed
on as a half-close — after ``slow_close``'s delay when one applies — and the
connection is closed once both directions have ended. Disabling the proxy and
the ``timeout`` and ``reset_peer`` toxics close both sides at once.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from typing import TYPE_CHECKING

from chaos.toxiproxy.toxics import Toxic

if TYPE_CHECKING:
    from chaos.toxiproxy.proxy import Proxy

_CHUNK = 32 * 1024
_QUEUED = 64  # chunks read ahead of the writer; backpressure beyond


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class Link:
    """A client connection and its upstream connection, both owned by the link."""

    def __init__(
        self,
        proxy: "Proxy",
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self._draws: dict[str, bool] = {}
        self._timers: dict[str, tuple[Toxic, asyncio.Task[None]]] = {}
        self._closed = asyncio.Event()
        self._rng = random.Random()
        self.dropped = 0  # bytes swallowed by a timeout toxic

    # -- toxics -----------------------------------------------------------

    def _applies(self, toxic: Toxic) -> bool:
        if toxic.name not in self._draws:
            self._draws[toxic.name] = self._rng.random() < toxic.toxicity
        return self._draws[toxic.name]

    def active(self, stream: str) -> list[Toxic]:
        """The toxics of ``stream`` that apply to this connection, in chain order."""
        return [t for t in self.proxy.chain(stream) if self._applies(t)]

    def toxics_changed(self) -> None:
        """Forget draws of removed toxics; arm or cancel the time-driven ones."""
        current = {t.name: t for t in self.proxy.chain("upstream") + self.proxy.chain("downstream")}
        for name in list(self._draws):
            if name not in current:
                del self._draws[name]
        for name, (toxic, task) in list(self._timers.items()):
            if current.get(name) is not toxic or toxic.attributes != current[name].attributes:
                task.cancel()
                del self._timers[name]
        for name, toxic in current.items():
            if toxic.type in ("timeout", "reset_peer") and name not in self._timers and self._applies(toxic):
                ms = toxic.attributes["timeout"]
                if toxic.type == "timeout" and ms == 0:
                    continue  # data is dropped until the toxic goes; the connection stays
                self._timers[name] = (toxic, asyncio.create_task(self._fire(toxic, ms / 1000)))

    async def _fire(self, toxic: Toxic, after: float) -> None:
        await asyncio.sleep(after)
        self.close(reset=toxic.type == "reset_peer")

    # -- running ----------------------------------------------------------

    async def run(self) -> None:
        """Pump both directions until both have ended or the link is closed."""
        self.toxics_changed()
        pumps = [
            asyncio.create_task(self._pump("upstream", self.client[0], self.upstream[1])),
            asyncio.create_task(self._pump("downstream", self.upstream[0], self.client[1])),
        ]
        closed = asyncio.create_task(self._closed.wait())
        try:
            pending = {*pumps, closed}
            while closed in pending and (pending & set(pumps)):
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (*pumps, closed):
                task.cancel()
            for _, task in self._timers.values():
                task.cancel()
            self.close()

    def close(self, *, reset: bool = False) -> None:
        """Close both connections (with a TCP RST when ``reset``)."""
        for _, writer in (self.client, self.upstream):
            if reset:
                _reset(writer)
            elif not writer.is_closing():
                writer.transport.abort() if self.proxy_stopping else writer.close()
        self._closed.set()

    @property
    def proxy_stopping(self) -> bool:
        return not self.proxy.enabled

    async def _read(self, reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes]]) -> None:
        while True:
            try:
                data = await reader.read(_CHUNK)
            except (ConnectionError, OSError):
                data = b""
            await queue.put((time.monotonic(), data))
            if not data:
                return

    async def _pump(self, stream: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUED)
        read_task = asyncio.create_task(self._read(reader, queue))
        passed = 0
        try:
            while True:
                arrived, data = await queue.get()
                toxics = self.active(stream)
                if not data:
                    delay = sum(t.attributes["delay"] for t in toxics if t.type == "slow_close")
                    await asyncio.sleep(delay / 1000)
                    return
                if any(t.type == "timeout" for t in toxics):
                    self.dropped += len(data)  # swallowed: nothing passes while a timeout toxic is on
                    continue
                delay_ms = 0.0
                for t in toxics:
                    if t.type == "latency":
                        jitter = t.attributes["jitter"]
                        delay_ms += t.attributes["latency"] + (self._rng.uniform(-jitter, jitter) if jitter else 0)
                wait = arrived + max(0.0, delay_ms) / 1000 - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                last = False
                for t in toxics:
                    if t.type == "limit_data":
                        room = t.attributes["bytes"] - passed
                        if len(data) >= room:
                            data, last = data[: max(0, room)], True
                await self._write(toxics, writer, data)
                passed += len(data)
                if last:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            read_task.cancel()
            # Pass the end on (half-close): the other direction still delivers
            # what the peer sends back before it closes too.
            try:
                if writer.can_write_eof() and not writer.is_closing():
                    writer.write_eof()
            except (OSError, RuntimeError):
                pass

    async def _write(self, toxics: list[Toxic], writer: asyncio.StreamWriter, data: bytes) -> None:
        pieces = [data]
        pause = 0.0
        for t in toxics:
            if t.type == "slicer" and t.attributes["average_size"] > 0:
                pieces, pause = self._slice(data, t), t.attributes["delay"] / 1e6
        rate_kbs = min((t.attributes["rate"] for t in toxics if t.type == "bandwidth" and t.attributes["rate"] > 0), default=0)
        if rate_kbs:
            # rate is KB/s; each 100 ms worth of bytes is held for its time before it goes.
            step = rate_kbs * 100
            pieces = [p[at : at + step] for p in pieces for at in range(0, len(p), step)]
        for i, piece in enumerate(pieces):
            if not piece:
                continue
            if rate_kbs:
                await asyncio.sleep(len(piece) / (rate_kbs * 1000))
            writer.write(piece)
            await writer.drain()
            if pause and i < len(pieces) - 1:
                await asyncio.sleep(pause)

    def _slice(self, data: bytes, toxic: Toxic) -> list[bytes]:
        avg, var = toxic.attributes["average_size"], toxic.attributes["size_variation"]
        out, at = [], 0
        while at < len(data):
            size = max(1, avg + (self._rng.randint(-var, var) if var else 0))
            out.append(data[at : at + size])
            at += size
        return out
