"""A node with ``[auth] enabled``: every process under its own role, against the generated ``auth.conf``.

The node's embedded server loads ``auth.conf``; the supervisor connects as
``node``, each worker as its own agent, the CLI as ``operator`` (``publish``
as ``client``). The whole pipeline runs — tasks, results, a dead letter,
registry entries, quota leases, a variables vote, a Byzantine decision — and
the server logs no permissions violation on the way: each role's permissions
are enough for its part, and tighter ones are proven in
tests/broker/test_permissions.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import nats.errors
import pytest

from broker import (
    EmbeddedServer,
    ServerOptions,
    connect,
    decode,
    jetstream,
    read_stream,
    role_identity,
    subjects,
    worker_identity,
)
from broker.tasks import collect_results, publish_task
from protocols.bft import Participant, Signer, StaticKeyDirectory
from protocols.bft.keys import new_seed
from supervisor.harness import FOUNDATION, REPO, NodeProcess, write_config

NODE = "n1"


def cli(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FOUNDATION, *args, "--config", str(config)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=config.parent)


@pytest.fixture
def auth_node(tmp_path: Path):
    config = write_config(
        tmp_path / "foundation.toml", node=NODE,
        pools={"echo": {"handler": "workers.examples:echo", "size": 2, "max_deliver": 2, "backoff": [0.05],
                        "capabilities": ["echo", "variables"], "quota": {"rate_per_s": 1000}},
               "bid": {"handler": "workers.examples:echo", "size": 2, "dispatch": "market"}},
        auth={"enabled": True, "dir": str(tmp_path / "auth")},
        variables={"lr": {"kind": "float", "default": 0.1, "low": 0.0, "high": 1.0}},
    )
    init = cli(config, "auth", "init")
    assert init.returncode == 0, init.stderr
    node = NodeProcess(config)
    try:
        node.wait_up()
        yield config, node.url, tmp_path / "auth", node
    finally:
        node.stop()


async def test_the_whole_pipeline_runs_with_each_process_under_its_role(auth_node) -> None:
    config, url, auth, node = auth_node
    client = await connect(url, name="client", **role_identity(auth, "client").connect_options())
    operator = await connect(url, name="operator", **role_identity(auth, "operator").connect_options())
    try:
        # Tasks and results, as the client; a body that is no JSON ends in the DLQ.
        async with collect_results(jetstream(client), "echo") as results:
            ids = {f"t{i}" for i in range(5)}
            for task_id in sorted(ids):
                await publish_task(jetstream(client), "echo", {"id": task_id}, task_id=task_id)
            await jetstream(client).publish(subjects.tasks("echo"), b"{not json", headers={subjects.MSG_ID: "poison"})
            got = await results.wait_for(ids | {"poison"}, timeout=60)
        assert all(got[t]["ok"] and got[t]["result"] == {"id": t} for t in ids)
        assert not got["poison"]["ok"]
        [dead] = await read_stream(jetstream(operator), subjects.DLQ_STREAM, subjects.dlq("echo"))
        assert dead.data == b"{not json"

        # Market dispatch: each task offered by Contract Net among the pool's agents, bids on their own subjects.
        async with collect_results(jetstream(client), "bid") as results:
            for task_id in ("b1", "b2"):
                await publish_task(jetstream(client), "bid", {"id": task_id}, task_id=task_id)
            got = await results.wait_for({"b1", "b2"}, timeout=60)
        assert all(got[t]["ok"] and got[t]["result"] == {"id": t} for t in ("b1", "b2"))

        # Registry entries, each written by its own worker; read by the operator's CLI.
        listed = cli(config, "registry", "ls", "--url", url, "--json")
        assert listed.returncode == 0, listed.stderr
        assert sorted(e["id"] for e in json.loads(listed.stdout)["entries"]) == [
            f"{NODE}.bid.0", f"{NODE}.bid.1", f"{NODE}.echo.0", f"{NODE}.echo.1"]

        # A variables vote: the operator asks the node, the workers vote under their identities,
        # the node writes the value (the operator itself may not write the bucket).
        proposed = cli(config, "vars", "propose", "lr", "0.5", "--url", url)
        assert proposed.returncode == 0, proposed.stdout + proposed.stderr
        outside = cli(config, "vars", "propose", "lr", "5.0", "--url", url)
        assert outside.returncode != 0 and "rejected" in outside.stderr, outside.stderr
        variables = await jetstream(operator).key_value(subjects.VARIABLES_BUCKET)
        assert decode((await variables.get("value.lr")).value)["value"] == 0.5

        # A Byzantine decision among four members connected as the worker role.
        await _bft_decision(url, auth)

        # A worker's identity cannot drain the node (the server refuses it): the node keeps serving.
        worker = await connect(url, name="worker", **worker_identity(auth, f"{NODE}.echo.0").connect_options())
        try:
            with pytest.raises(nats.errors.TimeoutError):
                await worker.request(f"foundation.control.{NODE}.drain", b"{}", timeout=1)
        finally:
            await worker.close()
        async with collect_results(jetstream(client), "echo") as results:
            await publish_task(jetstream(client), "echo", {"id": "after"}, task_id="after")
            assert (await results.wait_for({"after"}, timeout=60))["after"]["ok"]
    finally:
        await client.close()
        await operator.close()
    assert node.stop() == 0  # the workers' and the node's shutdown too runs under their permissions
    log = (config.parent / "nats" / "nats-server.log").read_text()
    violations = [line for line in log.splitlines() if "Violation" in line and "foundation.control" not in line]
    assert not violations, "\n".join(violations)
    assert f'Publish Violation - Subject "foundation.control.{NODE}.drain"' in log


async def _bft_decision(url: str, auth: Path) -> None:
    signers = [Signer(f"p{i}", new_seed()) for i in range(4)]
    directory = StaticKeyDirectory({s.id: s.public_key for s in signers})
    identity = role_identity(auth, "worker")
    conns = [await connect(url, name=f"bft-{s.id}", **identity.connect_options()) for s in signers]
    parts = [Participant(nc, s, directory, rebroadcast_interval=0.05) for nc, s in zip(conns, signers)]
    try:
        decided = await asyncio.gather(*(p.decide("g", f"v-{p.id}", timeout=30, instance="i0") for p in parts))
        assert len({value for value, _ in decided}) == 1
    finally:
        for p in parts:
            await p.close()
        for nc in conns:
            await nc.close()


def test_a_user_and_password_identity_never_shows_the_password(tmp_path: Path) -> None:
    secret = "s3cret-pw-4711"
    conf = tmp_path / "server.conf"
    conf.write_text(f'authorization {{ user: "fnode", password: "{secret}" }}\n')
    (tmp_path / "pw").write_text(secret + "\n")
    with EmbeddedServer(ServerOptions(store_dir=tmp_path / "nats-ext", extra_args=("--config", str(conf)))) as server:
        config = write_config(tmp_path / "foundation.toml", nats_url=server.url,
                              nats={"user": "fnode", "password_file": str(tmp_path / "pw")},
                              pools={"echo": {"handler": "workers.examples:echo", "size": 1}})
        node = NodeProcess(config, "--log-level", "DEBUG")
        try:
            node.wait_up()
            status = cli(config, "status", "--url", server.url, "--json")
            assert status.returncode == 0, status.stderr
            assert json.loads(status.stdout)["identity"] == "user fnode"
            assert secret not in status.stdout + status.stderr
        finally:
            assert node.stop() == 0
        assert secret not in "".join(node.output)
        # Without the password the server refuses, and the CLI says so.
        (tmp_path / "pw").write_text("wrong\n")
        refused = cli(config, "status", "--url", server.url)
        assert refused.returncode != 0 and "refused this identity" in refused.stderr, refused.stderr


def test_auth_enabled_without_auth_init_says_what_to_run(tmp_path: Path) -> None:
    config = write_config(tmp_path / "foundation.toml", pools={"echo": {"handler": "workers.examples:echo"}},
                          auth={"enabled": True, "dir": str(tmp_path / "auth")})
    proc = subprocess.run([FOUNDATION, "up", "--config", str(config)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path)
    assert proc.returncode == 1
    assert "node.nk does not exist; run `foundation auth init`" in proc.stderr
