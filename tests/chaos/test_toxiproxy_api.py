"""The toxiproxy API, driven by two real clients: raw HTTP (byte for byte) and toxiproxy-python.

The expected bytes are toxiproxy 2.x's documented answers: compact JSON with
proxy fields ``name, listen, upstream, enabled, toxics`` and toxic fields
``attributes, name, type, stream, toxicity``; errors ``{"error":…,"status":…}``
and a newline, as ``text/plain; charset=utf-8``; 201 on create, 204 on
delete and reset.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest
import toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from chaos.toxiproxy import ATTRIBUTES, VERSION, ToxiproxyServer

pytestmark = pytest.mark.timeout(60)

UP = "127.0.0.1:9"  # never dialled: no test here opens a connection through a proxy


@pytest.fixture
def server() -> Iterator[ToxiproxyServer]:
    with ToxiproxyServer() as srv:
        yield srv


def call(server: ToxiproxyServer, method: str, path: str, body: object = None, raw: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    conn.request(method, path, body=data, headers=headers or {})
    resp = conn.getresponse()
    out = resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    conn.close()
    return out


def proxy_bytes(name: str, listen: str, enabled: bool = True, toxics: str = "") -> bytes:
    return (f'{{"name":"{name}","listen":"{listen}","upstream":"{UP}",'
            f'"enabled":{"true" if enabled else "false"},"toxics":[{toxics}]}}').encode()


def error(message: str, status: int) -> bytes:
    return f'{{"error":"{message}","status":{status}}}\n'.encode()


def test_version_and_unknown_routes(server: ToxiproxyServer) -> None:
    status, headers, body = call(server, "GET", "/version")
    assert (status, headers["content-type"], body) == (200, "application/json;charset=utf-8", f'{{"version": "{VERSION}"}}\n'.encode())
    assert call(server, "GET", "/nope")[::2] == (404, b"404 page not found\n")
    assert call(server, "PUT", "/proxies")[::2] == (405, b"")
    assert call(server, "GET", "/proxies", headers={"User-Agent": "Mozilla/5.0"})[::2] == (403, b"User agent not allowed\n")


def test_proxy_crud_byte_for_byte(server: ToxiproxyServer) -> None:
    assert call(server, "GET", "/proxies")[::2] == (200, b"{}")
    status, headers, body = call(server, "POST", "/proxies", {"name": "db", "upstream": UP, "listen": "127.0.0.1:0"})
    assert status == 201 and headers["content-type"] == "application/json"
    listen = json.loads(body)["listen"]
    assert listen.startswith("127.0.0.1:") and not listen.endswith(":0")
    assert body == proxy_bytes("db", listen)
    assert call(server, "GET", "/proxies/db")[::2] == (200, body)
    assert call(server, "GET", "/proxies")[::2] == (200, b'{"db":' + body + b"}")
    # Errors: exists, missing fields, bad JSON, not found.
    status, headers, body2 = call(server, "POST", "/proxies", {"name": "db", "upstream": UP})
    assert (status, headers["content-type"], body2) == (409, "text/plain; charset=utf-8", error("proxy already exists", 409))
    assert call(server, "POST", "/proxies", {"upstream": UP})[::2] == (400, error("missing required field: name", 400))
    assert call(server, "POST", "/proxies", {"name": "x"})[::2] == (400, error("missing required field: upstream", 400))
    status, _, body3 = call(server, "POST", "/proxies", raw=b"{nope")
    assert status == 400 and body3.startswith(b'{"error":"bad request body: ') and body3.endswith(b'","status":400}\n')
    assert call(server, "GET", "/proxies/none")[::2] == (404, error("proxy not found", 404))
    assert call(server, "POST", "/proxies/none", {"enabled": False})[::2] == (404, error("proxy not found", 404))
    assert call(server, "DELETE", "/proxies/none")[::2] == (404, error("proxy not found", 404))
    # Update: disable (POST and PATCH both), then delete.
    assert call(server, "POST", "/proxies/db", {"enabled": False})[::2] == (200, proxy_bytes("db", listen, enabled=False))
    assert call(server, "PATCH", "/proxies/db", {"enabled": True})[::2] == (200, proxy_bytes("db", listen))
    assert call(server, "DELETE", "/proxies/db")[::2] == (204, b"")
    assert call(server, "GET", "/proxies")[::2] == (200, b"{}")


def test_bind_error_is_a_500(server: ToxiproxyServer) -> None:
    _, _, body = call(server, "POST", "/proxies", {"name": "a", "upstream": UP})
    listen = json.loads(body)["listen"]
    status, _, body = call(server, "POST", "/proxies", {"name": "b", "upstream": UP, "listen": listen})
    assert status == 500 and json.loads(body)["error"].startswith(f"listen tcp {listen}: bind: ")


def test_populate(server: ToxiproxyServer) -> None:
    status, _, body = call(server, "POST", "/populate", [{"name": "a", "upstream": UP}, {"name": "b", "upstream": UP, "enabled": False}])
    assert status == 201
    made = json.loads(body)["proxies"]
    assert [(p["name"], p["enabled"]) for p in made] == [("a", True), ("b", False)]
    assert body == b'{"proxies":[' + proxy_bytes("a", made[0]["listen"]) + b"," + proxy_bytes("b", "127.0.0.1:0", enabled=False) + b"]}"
    assert call(server, "POST", "/populate", [{"name": "c"}])[::2] == (
        400, b'{"error":"missing required field: upstream at proxy 1","status":400,"proxies":null}')
    assert "c" not in json.loads(call(server, "GET", "/proxies")[2])


@pytest.mark.parametrize("toxic_type", sorted(ATTRIBUTES))
def test_every_toxic_type_crud(server: ToxiproxyServer, toxic_type: str) -> None:
    call(server, "POST", "/proxies", {"name": "p", "upstream": UP})
    attrs = {k: i + 7 for i, k in enumerate(ATTRIBUTES[toxic_type])}
    status, headers, body = call(server, "POST", "/proxies/p/toxics", {"type": toxic_type, "stream": "upstream", "attributes": attrs})
    rendered_attrs = ",".join(f'"{k}":{v}' for k, v in attrs.items())
    expected = (f'{{"attributes":{{{rendered_attrs}}},"name":"{toxic_type}_upstream","type":"{toxic_type}",'
                f'"stream":"upstream","toxicity":1}}').encode()
    assert (status, headers["content-type"], body) == (200, "application/json", expected)
    assert call(server, "GET", "/proxies/p/toxics")[::2] == (200, b"[" + expected + b"]")
    assert call(server, "GET", f"/proxies/p/toxics/{toxic_type}_upstream")[::2] == (200, expected)
    # An update changes what it names and keeps the rest.
    first = ATTRIBUTES[toxic_type][0]
    status, _, body = call(server, "PATCH", f"/proxies/p/toxics/{toxic_type}_upstream", {"attributes": {first: 1}, "toxicity": 0.5})
    assert status == 200 and json.loads(body)["attributes"] == {**attrs, first: 1} and b'"toxicity":0.5}' in body
    assert call(server, "DELETE", f"/proxies/p/toxics/{toxic_type}_upstream")[::2] == (204, b"")
    assert call(server, "GET", "/proxies/p/toxics")[::2] == (200, b"[]")


def test_toxic_errors_and_defaults(server: ToxiproxyServer) -> None:
    call(server, "POST", "/proxies", {"name": "p", "upstream": UP})
    status, _, body = call(server, "POST", "/proxies/p/toxics", {"type": "latency"})
    assert body == b'{"attributes":{"latency":0,"jitter":0},"name":"latency_downstream","type":"latency","stream":"downstream","toxicity":1}'
    assert call(server, "POST", "/proxies/p/toxics", {"type": "latency"})[::2] == (409, error("toxic already exists", 409))
    assert call(server, "POST", "/proxies/p/toxics", {"type": "nope"})[::2] == (400, error("invalid toxic type", 400))
    assert call(server, "POST", "/proxies/p/toxics", {"type": "latency", "stream": "sideways"})[::2] == (
        400, error("stream was invalid, can be either upstream or downstream", 400))
    assert call(server, "POST", "/proxies/none/toxics", {"type": "latency"})[::2] == (404, error("proxy not found", 404))
    assert call(server, "GET", "/proxies/p/toxics/none")[::2] == (404, error("toxic not found", 404))
    assert call(server, "PATCH", "/proxies/p/toxics/none", {})[::2] == (404, error("toxic not found", 404))
    assert call(server, "DELETE", "/proxies/p/toxics/none")[::2] == (404, error("toxic not found", 404))
    status, _, body = call(server, "POST", "/proxies/p/toxics", {"type": "bandwidth", "attributes": {"rate": 1.5}})
    assert status == 400 and body.startswith(b'{"error":"bad request body: ')
    # Upstream toxics list before downstream ones.
    call(server, "POST", "/proxies/p/toxics", {"type": "timeout", "stream": "upstream", "name": "t"})
    names = [t["name"] for t in json.loads(call(server, "GET", "/proxies/p/toxics")[2])]
    assert names == ["t", "latency_downstream"]
    # Reset: toxics gone, disabled proxies enabled.
    call(server, "POST", "/proxies/p", {"enabled": False})
    assert call(server, "POST", "/reset")[::2] == (204, b"")
    proxy = json.loads(call(server, "GET", "/proxies/p")[2])
    assert proxy["enabled"] is True and proxy["toxics"] == []


def test_toxiproxy_python_client(server: ToxiproxyServer) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    old = APIConsumer.host, APIConsumer.port
    client = toxiproxy.Toxiproxy()
    client.update_api_consumer(host, int(port))
    try:
        assert client.running()
        assert json.loads(client.version()) == {"version": VERSION}
        proxy = client.create(upstream=UP, name="redis")
        assert (proxy.name, proxy.upstream, proxy.enabled) == ("redis", UP, True)
        with pytest.raises(ProxyExists):
            client.create(upstream=UP, name="redis")
        assert set(client.proxies()) == {"redis"}
        proxy.add_toxic(type="latency", attributes={"latency": 100, "jitter": 10})
        proxy.add_toxic(type="reset_peer", stream="upstream", toxicity=0.25, attributes={"timeout": 5})
        toxics = proxy.toxics()
        assert {n: (t.type, t.stream, t.toxicity, t.attributes) for n, t in toxics.items()} == {
            "latency_downstream": ("latency", "downstream", 1, {"latency": 100, "jitter": 10}),
            "reset_peer_upstream": ("reset_peer", "upstream", 0.25, {"timeout": 5}),
        }
        with pytest.raises(InvalidToxic):
            proxy.add_toxic(type="nope")
        assert proxy.destroy_toxic("latency_downstream")
        with pytest.raises(NotFound):
            proxy.destroy_toxic("latency_downstream")
        with proxy.down():
            assert client.get_proxy("redis").enabled is False
        assert client.get_proxy("redis").enabled is True
        assert client.reset()
        assert client.get_proxy("redis").toxics() == {}
        populated = client.populate([{"name": "pg", "upstream": UP, "listen": "127.0.0.1:0"}])
        assert [p.name for p in populated] == ["pg"]
        client.destroy_all()
        assert client.proxies() == {}
    finally:
        client.update_api_consumer(*old)


def test_suite_uses_the_toxiproxy_named_by_env(server: ToxiproxyServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from chaos.toxiproxy import open_toxiproxy

    monkeypatch.setenv("TOXIPROXY_URL", server.url + "/")
    with open_toxiproxy() as url:
        assert url == server.url
    monkeypatch.delenv("TOXIPROXY_URL")
    monkeypatch.setenv("PATH", "/nonexistent")  # no toxiproxy-server: ours, in a thread
    with open_toxiproxy() as url:
        assert url != server.url and call_version(url) == VERSION


def call_version(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"{url}/version", timeout=10) as resp:
        return json.loads(resp.read())["version"]


def test_malformed_requests_get_a_400_and_the_server_goes_on(server: ToxiproxyServer) -> None:
    import socket

    host, port = server.url.removeprefix("http://").split(":")
    for raw in (b"GET /version HTTP/1.1\r\nContent-Length: x\r\n\r\n", b"NONSENSE\r\n\r\n",
                b"POST /proxies HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(raw)
            assert sock.recv(4096).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert call(server, "GET", "/version")[0] == 200
