"""A proxy: a listening TCP port, its upstream, its toxics and its open links.

Enabling listens on ``listen`` (port 0 picks one; ``listen`` then names the
port picked, kept for later restarts); disabling stops listening and closes
every open connection, so new connections are refused until it is enabled
again — what toxiproxy does, and what the ``down`` nemesis relies on.
"""

from __future__ import annotations

import asyncio
import socket

from chaos.toxiproxy.errors import PROXY_EXISTS, TOXIC_EXISTS, TOXIC_NOT_FOUND, ApiError, json_str
from chaos.toxiproxy.link import Link
from chaos.toxiproxy.toxics import Toxic

_DIAL_TIMEOUT = 5.0


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``, ``:port``) → (host, port); an empty host means all interfaces."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ApiError(f"listen tcp {address}: address {address}: missing port in address", 500)
    return host.strip("[]") or "0.0.0.0", int(port)


class Proxy:
    """One named proxy (toxiproxy's fields: name, listen, upstream, enabled, toxics)."""

    def __init__(self, name: str, listen: str, upstream: str) -> None:
        self.name = name
        self.listen = listen or "127.0.0.1:0"
        self.upstream = upstream
        self.enabled = False
        self.toxics: dict[str, Toxic] = {}
        self.links: set[Link] = set()
        self._server: asyncio.Server | None = None

    # -- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        """Listen (a no-op when enabled). Raises ApiError 500 when the address cannot be bound."""
        if self.enabled:
            return
        host, port = split_address(self.listen)
        try:
            self._server = await asyncio.start_server(self._accept, host, port, reuse_address=True)
        except OSError as exc:
            raise ApiError(f"listen tcp {self.listen}: bind: {exc.strerror or exc}", 500) from exc
        sockname = self._server.sockets[0].getsockname()
        family = self._server.sockets[0].family
        self.listen = f"[{sockname[0]}]:{sockname[1]}" if family == socket.AF_INET6 else f"{sockname[0]}:{sockname[1]}"
        self.enabled = True

    async def stop(self) -> None:
        """Stop listening and close every open connection (a no-op when disabled)."""
        if not self.enabled:
            return
        self.enabled = False
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self.links):
            link.close()

    async def update(self, listen: str, upstream: str, enabled: bool) -> None:
        if listen != self.listen or upstream != self.upstream:
            await self.stop()
            self.listen, self.upstream = listen, upstream
        if enabled:
            await self.start()
        else:
            await self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.enabled:
            writer.transport.abort()
            return
        host, port = split_address(self.upstream)
        try:
            upstream = await asyncio.wait_for(asyncio.open_connection(host, port), _DIAL_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            writer.close()  # toxiproxy closes the client when the upstream cannot be reached
            return
        link = Link(self, (reader, writer), upstream)
        self.links.add(link)
        try:
            await link.run()
        finally:
            self.links.discard(link)

    # -- toxics -----------------------------------------------------------

    def chain(self, stream: str) -> list[Toxic]:
        return [t for t in self.toxics.values() if t.stream == stream]

    def ordered_toxics(self) -> list[Toxic]:
        """Upstream toxics, then downstream ones, each in the order added (toxiproxy's listing)."""
        return self.chain("upstream") + self.chain("downstream")

    def add_toxic(self, toxic: Toxic) -> Toxic:
        if toxic.name in self.toxics:
            raise TOXIC_EXISTS
        self.toxics[toxic.name] = toxic
        self._changed()
        return toxic

    def toxic(self, name: str) -> Toxic:
        if name not in self.toxics:
            raise TOXIC_NOT_FOUND
        return self.toxics[name]

    def update_toxic(self, name: str, body: object) -> Toxic:
        toxic = self.toxic(name)
        toxic.apply(body)
        # A fresh object: links re-arm timers whose toxic changed.
        self.toxics[name] = Toxic(toxic.name, toxic.type, toxic.stream, toxic.toxicity, dict(toxic.attributes))
        self._changed()
        return self.toxics[name]

    def remove_toxic(self, name: str) -> None:
        self.toxic(name)
        del self.toxics[name]
        self._changed()

    def reset_toxics(self) -> None:
        self.toxics.clear()
        self._changed()

    def _changed(self) -> None:
        for link in list(self.links):
            link.toxics_changed()

    def to_json(self) -> str:
        toxics = ",".join(t.to_json() for t in self.ordered_toxics())
        return (
            f'{{"name":{json_str(self.name)},"listen":{json_str(self.listen)},"upstream":{json_str(self.upstream)},'
            f'"enabled":{"true" if self.enabled else "false"},"toxics":[{toxics}]}}'
        )


class Proxies:
    """The server's proxies by name."""

    def __init__(self) -> None:
        self.by_name: dict[str, Proxy] = {}

    async def add(self, proxy: Proxy, enabled: bool) -> Proxy:
        if proxy.name in self.by_name:
            raise PROXY_EXISTS
        if enabled:
            await proxy.start()
        self.by_name[proxy.name] = proxy
        return proxy

    async def add_or_replace(self, proxy: Proxy, enabled: bool) -> Proxy:
        old = self.by_name.get(proxy.name)
        if old is not None:
            if old.listen == proxy.listen and old.upstream == proxy.upstream:
                return old
            await self.remove(old.name)
        return await self.add(proxy, enabled)

    async def remove(self, name: str) -> None:
        proxy = self.by_name.pop(name)
        await proxy.stop()
