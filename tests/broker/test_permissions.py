"""Each role's permissions, enforced by a real nats-server loading the generated ``auth.conf``.

A forbidden action is proven refused *by the server*: the server answers the
publish or subscription with a permissions violation (``-ERR``), which the
client hands to its error callback before the ``PONG`` of the flush that
follows. An allowed action is proven by its effect (an ack, a value, a message).
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats.errors
import pytest

from broker import (
    EmbeddedServer,
    NatsUnavailableError,
    ServerOptions,
    connect,
    declare_pool_consumer,
    declare_streams,
    init_auth,
    jetstream,
    key_value,
    role_identity,
    subjects,
    worker_identity,
)
from broker.authconf import render
from broker.permissions import inbox_prefix
from config import NatsConfig, PoolConfig

POOL = PoolConfig(name="echo", handler="m:f", size=2)
ME, OTHER = "n1.echo.0", "n1.echo.1"


async def settled(nc: Any) -> None:
    """Return once the server has applied what ``nc`` sent before.

    nats-py writes a flush's PING straight to the socket while SUBs and PUBs
    wait in its buffer for the flusher task, so one PONG does not prove a
    SUB arrived. The flusher runs while the first PONG is awaited; the
    second PING then follows the SUB.
    """
    await nc.flush(timeout=10)
    await nc.flush(timeout=10)


@pytest.fixture
def auth_dir(tmp_path: Path) -> Path:
    init_auth(tmp_path / "auth", ["n1"], [("echo", 2), ("other", 1)])
    return tmp_path / "auth"


@pytest.fixture
def auth_server(tmp_path: Path, auth_dir: Path) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(ServerOptions(store_dir=tmp_path / "nats", extra_args=("--config", str(auth_dir / "auth.conf"))))
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Conn:
    """A connection under one identity that records the server's permission violations."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.nc: Any = None
        self._changed = asyncio.Condition()

    async def open(self, url: str, identity: Any, name: str) -> "Conn":
        async def on_error(exc: Exception) -> None:
            if "permissions violation" in str(exc).lower():
                async with self._changed:
                    self.violations.append(str(exc).lower())
                    self._changed.notify_all()

        self.nc = await connect(url, name=name, error_cb=on_error, **identity.connect_options())
        return self

    async def _refused(self, what: str, timeout: float = 10.0) -> bool:
        # The client may send its flush PING ahead of a buffered PUB, so the
        # server's -ERR can follow the PONG: wait for the error itself.
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(lambda: any(what in v for v in self.violations)), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def refused_publish(self, subject: str) -> bool:
        """Publish once; True iff the server refused it as a permissions violation."""
        await self.nc.publish(subject, b"{}")
        return await self._refused(f'publish to "{subject}"'.lower())

    async def refused_subscribe(self, subject: str) -> bool:
        sub = await self.nc.subscribe(subject)
        refused = await self._refused(f'subscription to "{subject}"'.lower())
        await sub.unsubscribe()
        return refused


@pytest.fixture
async def conns(auth_server: EmbeddedServer, auth_dir: Path) -> AsyncIterator[dict[str, Conn]]:
    url = auth_server.url
    opened = {
        "node": await Conn().open(url, role_identity(auth_dir, "node"), "node"),
        "client": await Conn().open(url, role_identity(auth_dir, "client"), "client"),
        "operator": await Conn().open(url, role_identity(auth_dir, "operator"), "operator"),
        "worker": await Conn().open(url, worker_identity(auth_dir, ME), ME),
    }
    js = jetstream(opened["node"].nc)
    await declare_streams(js, NatsConfig())
    await declare_pool_consumer(js, POOL)
    for bucket in (subjects.REGISTRY_BUCKET, subjects.AGENT_STATE_BUCKET, subjects.VARIABLES_BUCKET):
        await key_value(js, bucket)
    try:
        yield opened
    finally:
        for conn in opened.values():
            await conn.nc.close()


def test_auth_init_writes_private_seeds_and_keeps_them(tmp_path: Path) -> None:
    first = init_auth(tmp_path / "a", ["n1"], [("echo", 2)])
    assert [u.name for u in first] == ["client", "worker", "node", "operator", "n1.echo.0", "n1.echo.1"]
    for path in [*(tmp_path / "a").glob("*.nk"), *(tmp_path / "a" / "workers").glob("*.nk")]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "auth.conf").st_mode) == 0o600
    # Again, for a grown pool and a second node: old identities kept, new ones added.
    again = init_auth(tmp_path / "a", ["n1", "n2"], [("echo", 3)])
    assert {u.name: u.public_key for u in first}.items() <= {u.name: u.public_key for u in again}.items()
    assert "n2.echo.2" in [u.name for u in again]
    assert (tmp_path / "a" / "auth.conf").read_text() == render(again)


async def test_an_unauthenticated_connection_is_refused(auth_server: EmbeddedServer) -> None:
    with pytest.raises(NatsUnavailableError, match="[Aa]uthorization"):
        await connect(auth_server.url, name="anonymous", reconnect=False, connect_timeout=5)


async def test_client_publishes_tasks_and_reads_results_only(conns: dict[str, Conn]) -> None:
    client = conns["client"]
    ack = await jetstream(client.nc).publish(subjects.tasks("echo"), b"{}")
    assert ack.stream == subjects.TASKS_STREAM
    results = await client.nc.subscribe("results.>")
    await settled(client.nc)  # subscribed at the server before the result is published
    await jetstream(conns["node"].nc).publish(subjects.results("echo"), b'{"r": 1}')
    assert (await results.next_msg(timeout=10)).data == b'{"r": 1}'
    assert not client.violations
    for subject in (
        "foundation.control.n1.drain", "$SRV.PING", "results.echo", "dlq.echo", f"$KV.variables.lr",
        f"$KV.registry.{ME}", f"$KV.agent_state.{ME}", "$JS.API.STREAM.DELETE.TASKS", "$JS.API.STREAM.PURGE.TASKS",
        "$JS.API.CONSUMER.DELETE.TASKS.pool-echo", "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.TASKS.pool-echo",
        "coord.consensus.variables.s1.vote",
    ):
        assert await client.refused_publish(subject), subject
    assert await client.refused_subscribe("_INBOX.>")  # nobody else's replies


async def test_worker_writes_only_its_own_keys_and_its_pools_subjects(conns: dict[str, Conn]) -> None:
    worker, node = conns["worker"], conns["node"]
    js = jetstream(worker.nc)
    await jetstream(node.nc).publish(subjects.tasks("echo"), b'{"n": 1}')
    sub = await js.pull_subscribe_bind(durable=subjects.consumer("echo"), stream=subjects.TASKS_STREAM)
    [msg] = await sub.fetch(1, timeout=10)
    assert (await js.publish(subjects.results("echo"), b"{}")).stream == subjects.RESULTS_STREAM
    await msg.ack_sync(timeout=10)
    for bucket in (subjects.REGISTRY_BUCKET, subjects.AGENT_STATE_BUCKET):
        kv = await js.key_value(bucket)
        await kv.put(ME, b"mine")
        assert (await kv.get(ME)).value == b"mine"
    votes = await node.nc.subscribe("coord.*.*.*.*.>")
    await settled(node.nc)
    for own in (f"coord.consensus.g.s1.vote.{ME}", f"coord.cnp.echo.c1.reply.{ME}"):  # its own vote, its own bid
        await worker.nc.publish(own, b"{}")
        assert (await votes.next_msg(timeout=10)).subject == own
    variables = await js.key_value(subjects.VARIABLES_BUCKET)
    await jetstream(node.nc).publish("$KV.variables.lr", b"0.1")
    assert (await variables.get("lr")).value == b"0.1"
    assert not worker.violations
    for subject in (
        f"$KV.registry.{OTHER}", f"$KV.agent_state.{OTHER}", "$KV.variables.lr",
        "foundation.control.n1.drain", "foundation.control.n1.scale", "$SRV.PING", "$SRV.INFO.foundation",
        "$JS.API.STREAM.DELETE.TASKS", "$JS.API.STREAM.PURGE.RESULTS", "$JS.API.STREAM.UPDATE.TASKS",
        "$JS.API.CONSUMER.DELETE.TASKS.pool-echo", "$JS.API.CONSUMER.MSG.NEXT.TASKS.pool-other",
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.TASKS.pool-echo", "tasks.echo", "results.other", "dlq.other",
        "coord.bft.variables._control.p0", "coord.quota.other.service.request",
        f"coord.consensus.g.s1.vote.{OTHER}", "coord.consensus.g.s1.propose",  # a vote in another's name
        f"coord.cnp.echo.c1.reply.{OTHER}", "coord.cnp.other.c1.cfp",  # a bid in another's name, another pool
    ):
        assert await worker.refused_publish(subject), subject
    assert await worker.refused_subscribe("_INBOX.>")
    assert await worker.refused_subscribe("foundation.control.>")


async def test_operator_controls_and_reads_but_forges_nothing(conns: dict[str, Conn]) -> None:
    operator, node = conns["operator"], conns["node"]
    async def status(msg: Any) -> None:
        await msg.respond(b'{"ok": true}')

    control = await node.nc.subscribe("foundation.control.n1.status", cb=status)
    await settled(node.nc)
    reply = await operator.nc.request("foundation.control.n1.status", b"{}", timeout=10)
    assert reply.data == b'{"ok": true}'
    await control.unsubscribe()
    js = jetstream(operator.nc)
    assert (await js.stream_info(subjects.TASKS_STREAM)).config.name == subjects.TASKS_STREAM
    rounds = await node.nc.subscribe(subjects.METRICS_ROUNDS)
    await settled(node.nc)
    await operator.nc.publish(subjects.METRICS_ROUNDS, b"[]")  # its rounds, for a node's metrics
    assert (await rounds.next_msg(timeout=10)).data == b"[]"
    await rounds.unsubscribe()
    assert not operator.violations
    for subject in (
        "tasks.echo", "results.echo", "dlq.echo", f"$KV.registry.{ME}", f"$KV.agent_state.{ME}",
        "$JS.API.STREAM.DELETE.TASKS", "$JS.API.STREAM.PURGE.TASKS", "$JS.API.CONSUMER.DELETE.TASKS.pool-echo",
        "$JS.API.CONSUMER.CREATE.TASKS", "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.TASKS.pool-echo",
        "coord.bft.variables._control.p0", f"coord.consensus.g.s1.vote.{ME}", f"coord.cnp.echo.c1.reply.{ME}",
        "$KV.variables.value.lr", "coord.consensus.variables.s1.propose",  # a variable changes only by a node's vote
    ):
        assert await operator.refused_publish(subject), subject


async def test_node_administers_but_cannot_forge_server_events(conns: dict[str, Conn]) -> None:
    node = conns["node"]
    js = jetstream(node.nc)
    await js.publish(subjects.tasks("echo"), b"{}")
    await js.purge_stream(subjects.TASKS_STREAM)
    assert (await js.stream_info(subjects.TASKS_STREAM)).state.messages == 0
    assert await js.delete_consumer(subjects.TASKS_STREAM, subjects.consumer("echo"))
    assert not node.violations
    assert await node.refused_publish("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.TASKS.pool-echo")
    assert await node.refused_publish("$SYS.REQ.SERVER.PING")


async def test_each_identity_reads_replies_under_its_own_inbox_prefix(conns: dict[str, Conn], auth_dir: Path) -> None:
    # Requests work (JetStream API replies arrive), and under the identity's own prefix.
    for name, stream in (("client", subjects.RESULTS_STREAM), ("operator", subjects.TASKS_STREAM), ("worker", "KV_variables")):
        nc = conns[name].nc
        assert nc.new_inbox().startswith("_INBOX.U")
        assert (await jetstream(nc).stream_info(stream)).config.name == stream
        assert not conns[name].violations, name
    from broker.identity import _public_key

    client_key = _public_key(str(auth_dir / "client.nk"))
    assert conns["client"].nc.new_inbox().startswith(inbox_prefix(client_key) + ".")
    assert await conns["worker"].refused_subscribe(f"{inbox_prefix(client_key)}.>")


async def test_a_forbidden_request_gets_no_answer_and_the_server_says_why(conns: dict[str, Conn]) -> None:
    with pytest.raises((nats.errors.TimeoutError, asyncio.TimeoutError)):
        await conns["client"].nc.request("$JS.API.STREAM.DELETE.TASKS", b"", timeout=1)
    assert await conns["client"]._refused('publish to "$js.api.stream.delete.tasks"')
    assert (await jetstream(conns["node"].nc).stream_info(subjects.TASKS_STREAM)).config.name == subjects.TASKS_STREAM


async def test_the_worker_template_answers_what_it_is_asked_and_nothing_else(conns: dict[str, Conn], auth_server, auth_dir) -> None:
    member = await Conn().open(auth_server.url, role_identity(auth_dir, "worker"), "bft member")
    try:
        async def answer(msg: Any) -> None:
            await member.nc.publish(msg.reply, b"signed answer")  # a response: allowed once

        await member.nc.subscribe("coord.bft.variables.var-lr-v0.request", cb=answer)
        await settled(member.nc)
        reply = await conns["operator"].nc.request("coord.bft.variables.var-lr-v0.request", b"{}", timeout=10)
        assert reply.data == b"signed answer"
        assert not member.violations
        # An inbox it was not asked from is refused, and so are the workers' and the operator's business.
        for subject in (conns["client"].nc.new_inbox(), f"$KV.registry.{ME}", "tasks.echo", "coord.bft.g._control.p0"):
            assert await member.refused_publish(subject), subject
    finally:
        await member.nc.close()
