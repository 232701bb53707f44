"""The node's sampled metrics against a real nats-server: consumers, streams, variables, /varz and /jsz."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker import EmbeddedServer, declare_pool_consumer, declare_streams, jetstream, publish_task, subjects
from broker.monitor import poll
from config.schema import NatsConfig, PoolConfig
from protocols.variables import ParameterSpace, VariableStore, open_variables_bucket
from supervisor.observe import NodeView, Sampler


@dataclass
class _Pool:  # the three figures the sampler reads of a pool supervisor
    size: int
    running_count: int
    drained: bool = False


def _values(sampler: Sampler) -> dict[tuple[str, tuple[str, ...]], float]:
    return {(f.name, labels): value for f in sampler.families() for labels, value in f.samples}


def _sampler(nc: Any, monitor: list[str], pools: dict[str, _Pool], space: ParameterSpace | None = None) -> Sampler:
    view = NodeView(
        node="n1", pools=pools, nc=lambda: nc, registry=lambda: None,
        monitor_urls=lambda: monitor, ready=lambda: True, variables=space,
    )
    return Sampler(view, interval=60)


async def test_sampler_reads_consumers_streams_variables_and_nats(nats_server: EmbeddedServer, nc) -> None:
    js = jetstream(nc)
    await declare_streams(js, NatsConfig())
    await declare_pool_consumer(js, PoolConfig(name="p", handler="workers.examples:echo"))
    for i in range(3):
        await publish_task(js, "p", {"i": i}, task_id=f"t{i}")
    await js.publish(subjects.dlq("p"), b"{}", headers={subjects.MSG_ID: "dead-1"})
    space = ParameterSpace.from_dict({"lr": {"kind": "float", "default": 0.1, "low": 0.0, "high": 1.0}})
    await VariableStore(await open_variables_bucket(js), space, approval=None).declare()
    assert nats_server.address is not None
    sampler = _sampler(nc, [nats_server.address.monitor_url], {"p": _Pool(size=3, running_count=2)}, space)

    await sampler.sample_once()

    v = _values(sampler)
    assert v[("foundation_pool_backlog", ("p",))] == 3
    assert v[("foundation_pool_ack_pending", ("p",))] == 0
    assert v[("foundation_dlq_messages", ("p",))] == 1
    assert v[("foundation_results_messages", ("p",))] == 0
    assert v[("foundation_workers_by_state", ("p", "running"))] == 2
    assert v[("foundation_workers_by_state", ("p", "down"))] == 1
    assert v[("foundation_variable_value", ("lr",))] == 0.1
    assert v[("foundation_variable_changes_total", ("lr",))] == 0
    server = (await poll(nats_server.address.monitor_url)).name
    assert v[("foundation_nats_up", (server,))] == 1
    assert v[("foundation_nats_jetstream_up", (server,))] == 1
    assert v[("foundation_nats_jetstream_streams", (server,))] >= 3
    assert v[("foundation_nats_connections", (server,))] >= 1
    assert all(n == 0 for (name, _), n in v.items() if name == "foundation_sampler_errors_total")


async def test_a_server_that_does_not_answer_is_down_and_sampling_goes_on(nc, unused_tcp_port: int) -> None:
    dead = f"http://127.0.0.1:{unused_tcp_port}"
    sampler = _sampler(nc, [dead], {})

    await sampler.sample_once()
    await sampler.sample_once()

    v = _values(sampler)
    assert v[("foundation_nats_up", (dead,))] == 0
    assert v[("foundation_nats_jetstream_up", (dead,))] == 0
    assert sampler.samples == 2


async def test_without_a_connection_a_part_fails_and_keeps_its_last_figures(nats_server: EmbeddedServer, nc) -> None:
    js = jetstream(nc)
    await declare_streams(js, NatsConfig())
    await declare_pool_consumer(js, PoolConfig(name="p", handler="workers.examples:echo"))
    current: list[Any] = [nc]
    view = NodeView(node="n1", pools={"p": _Pool(1, 1)}, nc=lambda: current[0], registry=lambda: None,
                    monitor_urls=lambda: [], ready=lambda: False)
    sampler = Sampler(view, interval=60)
    await sampler.sample_once()
    current[0] = None  # the connection is gone

    await sampler.sample_once()

    v = _values(sampler)
    assert v[("foundation_pool_backlog", ("p",))] == 0  # the last figure stays
    assert v[("foundation_sampler_errors_total", ("consumers",))] == 1
    assert v[("foundation_sampler_errors_total", ("streams",))] == 1
    assert v[("foundation_node_ready", ())] == 0
