"""Two nodes on a real 3-server R3 cluster; kill -9 of the server leading a stream mid-workload.

Each node lists a different server first in ``nats.url``, so they talk to the
cluster through different servers. While tasks flow, the server leading
``TASKS`` (or the ``agent_state`` bucket) is killed with SIGKILL and later
restarted. Expected: every published task gets its result (lost = 0), both
nodes keep serving, no worker is restarted and no node escalates.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from broker import LocalCluster, catalog, collect_results, connect, decode, jetstream, publish_task, read_stream, retrying, subjects
from supervisor.harness import NodeProcess
from tests.supervisor.cluster import start_node, stop_all
from tests.supervisor.test_up import worker_pids
from workers.statestore import StateStore

pytestmark = pytest.mark.timeout(240)

POOL = {"handler": "tests.handlers:where", "size": 2, "concurrency": 8, "ack_wait": 5.0, "max_restarts": 3, "max_seconds": 60}
N = 600


def starting_at(urls: list[str], first: int) -> str:
    return ",".join(urls[first:] + urls[:first])


async def until(condition, timeout: float, what: str) -> None:
    """Poll ``condition`` (async) until true: stream counts offer no event to wait on."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.2)


async def start_pair(tmp_path: Path, cluster: LocalCluster, pool: dict) -> tuple[NodeProcess, NodeProcess]:
    a = await start_node(tmp_path, "a", starting_at(cluster.urls, 0), {"p": dict(pool)}, nats={"replicas": 3})
    try:
        b = await start_node(tmp_path, "b", starting_at(cluster.urls, 1), {"p": dict(pool)}, nats={"replicas": 3})
    except BaseException:
        a.kill()
        raise
    return a, b


async def failover_run(cluster: LocalCluster, nc, stream: str, payload: dict) -> tuple[dict[str, int], float]:
    """Publish N tasks; kill -9 the leader of ``stream`` a third in, restart it two thirds in.

    Returns the pid that served each task and the seconds the leader was down.
    """
    js = jetstream(nc)
    victim = cluster.leader(stream)
    down = 0.0

    async def one(i: int, slots: asyncio.Semaphore) -> None:
        async with slots:
            await publish_task(js, "p", {**payload, "i": i}, task_id=f"t-{i}")

    slots = asyncio.Semaphore(32)
    pending = []
    for i in range(N):
        if i == N // 3:
            cluster.kill(victim)
            killed_at = time.monotonic()
        if i == 2 * N // 3:
            await asyncio.gather(*pending)  # published through the election: every one acked
            await asyncio.to_thread(cluster.restart, victim)
            down = time.monotonic() - killed_at
        pending.append(asyncio.create_task(one(i, slots)))
    await asyncio.gather(*pending)

    async def all_results() -> bool:
        try:
            return (await js.stream_info(subjects.RESULTS_STREAM)).state.messages >= N
        except Exception:  # a leader election of RESULTS: ask again
            return False

    await until(all_results, 120, f"{N} results")
    served = {}
    for msg in await retrying(lambda: read_stream(js, subjects.RESULTS_STREAM, subjects.results("p")), what="read results"):
        body = decode(msg.data)
        served[body["task_id"]] = body["result"]["pid"]
    return served, down


@pytest.mark.parametrize("stream", [subjects.TASKS_STREAM, catalog.bucket_stream(subjects.AGENT_STATE_BUCKET)])
async def test_kill_9_of_a_stream_leader_loses_nothing_and_restarts_no_worker(tmp_path: Path, nats_cluster: LocalCluster, stream: str) -> None:
    stateful = stream != subjects.TASKS_STREAM
    a, b = await start_pair(tmp_path, nats_cluster, POOL)
    nc = await connect(nats_cluster.url, name="client")
    try:
        before = {node: await worker_pids(nc, node) for node in ("a", "b")}
        extra = 0
        served, down = await failover_run(nats_cluster, nc, stream, {"seconds": 0.005, "count": stateful})
        print(f"leader of {stream} down for {down:.1f}s")

        assert sorted(served) == sorted(f"t-{i}" for i in range(N))  # lost = 0
        js = jetstream(nc)
        # The restarted server may still be catching up: calls retry as any client's do.
        assert (await retrying(lambda: js.stream_info(subjects.DLQ_STREAM), what="DLQ info")).state.messages == 0
        after = {node: await retrying(lambda n=node: worker_pids(nc, n), what="status") for node in ("a", "b")}
        assert after == before, "a worker was restarted during the failover:\n" + "".join(a.output[-60:] + b.output[-60:])
        late = {served[f"t-{i}"] for i in range(N // 3, N)}
        # One node may have served every late task while the other moved to
        # another server: give it more until it serves one (or the bound).
        async with collect_results(js, "p") as results:
            for batch in range(20):
                if all(late & set(before[node].values()) for node in ("a", "b")):
                    break
                more = {f"e{batch}-{i}" for i in range(32)}
                await asyncio.gather(*(publish_task(js, "p", {"count": stateful}, task_id=t) for t in sorted(more)))
                late |= {r["result"]["pid"] for r in (await results.wait_for(more, timeout=120)).values()}
                extra += len(more)
        for node in ("a", "b"):
            assert late & set(before[node].values()), f"node {node} served no task after the kill"
        assert a.proc.poll() is None and b.proc.poll() is None
        if stateful:
            store = await retrying(lambda: StateStore.open(js), what="open agent_state")
            states = await retrying(lambda: store.peers("p"), what="read agent states")
            # Effectively once: each task counted exactly once across all agents.
            assert sum(int(s.state.get("count", 0)) for s in states.values()) == N + extra
            assert {k.split(".", 1)[0] for k in states} == {"a", "b"}
    finally:
        await nc.close()
        codes = await stop_all(a, b)
    assert codes == [0, 0], "".join(a.output[-50:] + b.output[-50:])
