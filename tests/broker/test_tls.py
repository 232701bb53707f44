"""TLS: a node and a client over ``tls://`` to a server whose CA is made in the test (openssl CLI)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import EmbeddedServer, Identity, NatsUnavailableError, ServerOptions, connect, jetstream
from broker.tasks import collect_results, publish_task
from config import TlsConfig
from supervisor.harness import NodeProcess, write_config


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by the CA."""
    d.mkdir()
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(d, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=foundation-test-ca")
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl(d, "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=foundation-{name}")
        _openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return {name: d / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is needed to make the test CA")
        pytest.skip("openssl not found: cannot make the test CA")
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_server(tmp_path: Path, pki: dict[str, Path]) -> Iterator[EmbeddedServer]:
    conf = tmp_path / "tls.conf"
    conf.write_text(
        "tls {\n"
        f'  cert_file: "{pki["server.pem"]}"\n  key_file: "{pki["server.key"]}"\n'
        f'  ca_file: "{pki["ca.pem"]}"\n  verify: true\n'  # clients must show a certificate of this CA
        "}\n"
    )
    server = EmbeddedServer(ServerOptions(store_dir=tmp_path / "nats", extra_args=("--config", str(conf))))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def tls_url(server: EmbeddedServer) -> str:
    return "tls://" + server.url.split("://", 1)[1]


async def test_a_client_needs_the_ca_and_its_certificate(tls_server: EmbeddedServer, pki: dict[str, Path]) -> None:
    url = tls_url(tls_server)
    tls = TlsConfig(ca=str(pki["ca.pem"]), cert=str(pki["client.pem"]), key=str(pki["client.key"]))
    nc = await connect(url, name="tls client", **Identity(tls=tls).connect_options())
    try:
        assert nc.is_connected
        assert Identity(tls=tls).describe() == "anonymous over TLS"
    finally:
        await nc.close()
    for without in (TlsConfig(ca=str(pki["ca.pem"])), TlsConfig(cert=str(pki["client.pem"]), key=str(pki["client.key"]))):
        with pytest.raises(NatsUnavailableError):  # no client certificate / an unknown CA
            await connect(url, name="tls refused", reconnect=False, connect_timeout=5, **Identity(tls=without).connect_options())


async def test_a_node_and_a_client_over_tls(tmp_path: Path, tls_server: EmbeddedServer, pki: dict[str, Path]) -> None:
    url = tls_url(tls_server)
    tls = {"ca": str(pki["ca.pem"]), "cert": str(pki["client.pem"]), "key": str(pki["client.key"])}
    (tmp_path / "node").mkdir()
    config = write_config(tmp_path / "node" / "foundation.toml", nats_url=url, nats={"tls": tls},
                          pools={"echo": {"handler": "workers.examples:echo", "size": 1}})
    node = NodeProcess(config)
    try:
        node.wait_up()
        nc = await connect(url, name="tls client", **Identity(tls=TlsConfig(**tls)).connect_options())
        try:
            js = jetstream(nc)
            async with collect_results(js, "echo") as results:
                await publish_task(js, "echo", {"over": "tls"}, task_id="tls-1")
                got = await results.wait_for({"tls-1"}, timeout=60)
            assert got["tls-1"]["ok"] and got["tls-1"]["result"] == {"over": "tls"}
        finally:
            await nc.close()
    finally:
        assert node.stop() == 0
