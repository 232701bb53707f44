"""The toxiproxy 2.x HTTP API over :class:`~chaos.toxiproxy.proxy.Proxies`.

Routes, bodies and status codes as toxiproxy serves them:

======  ================================  ====================================
GET     /version                          200 ``{"version": "<v>"}\\n``
POST    /reset                            204: every proxy enabled, no toxics
GET     /proxies                          200 ``{name: proxy, …}``
POST    /proxies                          201 proxy; 400 missing name or
                                          upstream; 409 exists; 500 bind error
POST    /populate                         201 ``{"proxies":[…]}``
GET     /proxies/{p}                      200 proxy; 404
POST,PATCH /proxies/{p}                   200 proxy (listen, upstream, enabled)
DELETE  /proxies/{p}                      204
GET     /proxies/{p}/toxics               200 ``[toxic, …]``
POST    /proxies/{p}/toxics               200 toxic; 400 bad stream or type;
                                          409 exists
GET     /proxies/{p}/toxics/{t}           200 toxic; 404
POST,PATCH /proxies/{p}/toxics/{t}        200 toxic (attributes, toxicity)
DELETE  /proxies/{p}/toxics/{t}           204
======  ================================  ====================================

A proxy renders as ``{"name","listen","upstream","enabled","toxics"}`` and a
toxic as ``{"attributes","name","type","stream","toxicity"}``, compact JSON
with ``Content-Type: application/json``. Errors: see
:mod:`chaos.toxiproxy.errors`. An unknown path answers 404 ``404 page not
found``, a known path with another method 405 with no body, and a browser
(a ``User-Agent`` starting with ``Mozilla/``) 403 ``User agent not allowed``.
"""

from __future__ import annotations

import asyncio
import json
import re
from email.utils import formatdate
from typing import Any

from chaos.toxiproxy.errors import PROXY_NOT_FOUND, ApiError, bad_request, missing_field
from chaos.toxiproxy.proxy import Proxies, Proxy, split_address
from chaos.toxiproxy.toxics import Toxic

VERSION = "2.12.0"  # the toxiproxy release whose API this server speaks

_MAX_BODY = 1 << 20
_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 413: "Request Entity Too Large",
            500: "Internal Server Error"}
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"

Answer = tuple[int, str, bytes]  # status, content type, body


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as exc:
        raise bad_request(str(exc)) from exc


def _object(body: bytes) -> dict[str, Any]:
    data = _decode(body)
    if data is None:
        raise bad_request("EOF")
    if not isinstance(data, dict):
        raise bad_request(f"json: cannot unmarshal {type(data).__name__} into an object")
    return data


class Api:
    """Handles one request at a time against a set of proxies."""

    def __init__(self, proxies: Proxies | None = None) -> None:
        self.proxies = proxies or Proxies()
        self._lock = asyncio.Lock()  # one change at a time, as toxiproxy's collection lock
        self._routes: list[tuple[re.Pattern[str], dict[str, Any]]] = [
            (re.compile(r"/version"), {"GET": self.version}),
            (re.compile(r"/reset"), {"POST": self.reset}),
            (re.compile(r"/populate"), {"POST": self.populate}),
            (re.compile(r"/proxies"), {"GET": self.proxy_index, "POST": self.proxy_create}),
            (re.compile(r"/proxies/([^/]+)"), {"GET": self.proxy_show, "POST": self.proxy_update,
                                               "PATCH": self.proxy_update, "DELETE": self.proxy_delete}),
            (re.compile(r"/proxies/([^/]+)/toxics"), {"GET": self.toxic_index, "POST": self.toxic_create}),
            (re.compile(r"/proxies/([^/]+)/toxics/([^/]+)"), {"GET": self.toxic_show, "POST": self.toxic_update,
                                                              "PATCH": self.toxic_update, "DELETE": self.toxic_delete}),
        ]

    async def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        """Route one request; every error becomes toxiproxy's error answer."""
        if headers.get("user-agent", "").startswith("Mozilla/"):
            return 403, _TEXT, b"User agent not allowed\n"
        path = path.split("?", 1)[0]
        for pattern, methods in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if method not in methods:
                return 405, "", b""
            async with self._lock:
                try:
                    return await methods[method](*match.groups(), body=body)
                except ApiError as exc:
                    return exc.status, _TEXT, exc.body()
        return 404, _TEXT, b"404 page not found\n"

    def _proxy(self, name: str) -> Proxy:
        if name not in self.proxies.by_name:
            raise PROXY_NOT_FOUND
        return self.proxies.by_name[name]

    # -- handlers ---------------------------------------------------------

    async def version(self, *, body: bytes) -> Answer:
        return 200, "application/json;charset=utf-8", f'{{"version": "{VERSION}"}}\n'.encode()

    async def reset(self, *, body: bytes) -> Answer:
        for proxy in self.proxies.by_name.values():
            await proxy.start()
            proxy.reset_toxics()
        return 204, "", b""

    async def proxy_index(self, *, body: bytes) -> Answer:
        items = sorted(self.proxies.by_name.items())
        rendered = ",".join(f"{json.dumps(name)}:{p.to_json()}" for name, p in items)
        return 200, _JSON, f"{{{rendered}}}".encode()

    @staticmethod
    def _new_proxy(data: dict[str, Any], where: str = "") -> tuple[Proxy, bool]:
        for key in ("name", "upstream"):
            if not isinstance(data.get(key, ""), str):
                raise bad_request(f"json: cannot unmarshal into field {key} (a string)")
            if not data.get(key):
                raise missing_field(key + where)
        enabled = data.get("enabled", True)
        if enabled is None:
            enabled = True
        if not isinstance(enabled, bool):
            raise bad_request("json: cannot unmarshal into field enabled (a boolean)")
        return Proxy(data["name"], str(data.get("listen") or ""), data["upstream"]), enabled

    async def proxy_create(self, *, body: bytes) -> Answer:
        proxy, enabled = self._new_proxy(_object(body))
        await self.proxies.add(proxy, enabled)
        return 201, _JSON, proxy.to_json().encode()

    async def populate(self, *, body: bytes) -> Answer:
        data = _decode(body)
        try:
            if not isinstance(data, list):
                raise bad_request(f"json: cannot unmarshal {type(data).__name__} into a list of proxies")
            wanted: list[tuple[Proxy, bool]] = []
            for i, item in enumerate(data):
                if not isinstance(item, dict):
                    raise bad_request(f"json: cannot unmarshal proxy {i + 1} (an object)")
                proxy, enabled = self._new_proxy(item, f" at proxy {i + 1}")
                if any(p.name == proxy.name for p, _ in wanted):
                    raise ApiError(f'duplicate proxy name "{proxy.name}"', 500)
                if enabled:
                    split_address(proxy.listen)
                wanted.append((proxy, enabled))
            done = [await self.proxies.add_or_replace(p, enabled) for p, enabled in wanted]
        except ApiError as exc:
            # toxiproxy answers a failed populate with the error and the proxies field.
            return exc.status, _JSON, exc.body()[:-2] + b',"proxies":null}'
        return 201, _JSON, b'{"proxies":[' + ",".join(p.to_json() for p in done).encode() + b"]}"

    async def proxy_show(self, name: str, *, body: bytes) -> Answer:
        return 200, _JSON, self._proxy(name).to_json().encode()

    async def proxy_update(self, name: str, *, body: bytes) -> Answer:
        proxy = self._proxy(name)
        data = _object(body)
        listen = data.get("listen", proxy.listen)
        upstream = data.get("upstream", proxy.upstream)
        enabled = data.get("enabled", proxy.enabled)
        if not isinstance(listen, str) or not isinstance(upstream, str) or not isinstance(enabled, bool):
            raise bad_request("json: cannot unmarshal into a proxy (listen and upstream strings, enabled a boolean)")
        await proxy.update(listen, upstream, enabled)
        return 200, _JSON, proxy.to_json().encode()

    async def proxy_delete(self, name: str, *, body: bytes) -> Answer:
        self._proxy(name)
        await self.proxies.remove(name)
        return 204, "", b""

    async def toxic_index(self, name: str, *, body: bytes) -> Answer:
        toxics = self._proxy(name).ordered_toxics()
        return 200, _JSON, ("[" + ",".join(t.to_json() for t in toxics) + "]").encode()

    async def toxic_create(self, name: str, *, body: bytes) -> Answer:
        proxy = self._proxy(name)
        toxic = proxy.add_toxic(Toxic.parse(_object(body)))
        return 200, _JSON, toxic.to_json().encode()

    async def toxic_show(self, name: str, toxic: str, *, body: bytes) -> Answer:
        return 200, _JSON, self._proxy(name).toxic(toxic).to_json().encode()

    async def toxic_update(self, name: str, toxic: str, *, body: bytes) -> Answer:
        proxy = self._proxy(name)
        proxy.toxic(toxic)
        return 200, _JSON, proxy.update_toxic(toxic, _object(body)).to_json().encode()

    async def toxic_delete(self, name: str, toxic: str, *, body: bytes) -> Answer:
        self._proxy(name).remove_toxic(toxic)
        return 204, "", b""


def render(status: int, content_type: str, body: bytes, *, close: bool) -> bytes:
    """An HTTP/1.1 response with the headers toxiproxy's Go server sends."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    if content_type == _TEXT:
        lines.append("X-Content-Type-Options: nosniff")
    lines.append(f"Date: {formatdate(usegmt=True)}")
    if status != 204:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body if status != 204 else b"")


async def serve_http(api: Api, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve HTTP/1.1 requests on one connection (keep-alive) until it closes."""
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            parts = request_line.split(" ")
            if len(parts) != 3:
                writer.write(render(400, _TEXT, b"400 Bad Request\n", close=True))
                return
            method, path, version = parts
            headers = {}
            for line in header_lines:
                if ":" in line:
                    key, value = line.split(":", 1)
                    headers[key.strip().lower()] = value.strip()
            try:
                length = int(headers.get("content-length", "0") or 0)
            except ValueError:
                length = -1
            if length < 0 or "chunked" in headers.get("transfer-encoding", "").lower():
                writer.write(render(400, _TEXT, b"400 Bad Request\n", close=True))
                return
            if length > _MAX_BODY:
                writer.write(render(413, _TEXT, b"413 Request Entity Too Large\n", close=True))
                return
            body = await reader.readexactly(length) if length else b""
            close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
            status, content_type, payload = await api.handle(method, path, headers, body)
            writer.write(render(status, content_type, payload, close=close))
            await writer.drain()
            if close:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()
