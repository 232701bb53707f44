"""A pool on a replicated 3-server cluster, against the same pool on one server.

Two figures, each against a baseline measured in the same run:

* **drain throughput**: N tasks are published to ``TASKS`` first, then a node
  with one pool starts and drains them. The rate is taken from the server
  timestamps of the stored results (first to last), so node start-up does
  not count. Measured on one R1 server and on a 3-server R3 cluster, each
  with the default ``sync_interval`` (2 min) and with ``sync = always``,
  in interleaved rounds (the medians are reported: the machine's load moves).
  Target: R3 >= 0.5 x R1 (both with the default sync).
* **failover**: on the R3 cluster with the node idle, kill -9 the server
  leading ``TASKS`` and at once publish a probe task (retried with its id
  until a new leader stores it); the time until the probe's result arrives
  on its reply subject (sent only once the result is stored). The killed
  server is restarted between kills. Target: median < 5 s over 5 kills.

    .venv/bin/python bench/cluster.py [--tasks 5000] [--rounds 3] [--kills 5] [--workers 2] [--only drain|failover]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from broker import (  # noqa: E402
    EmbeddedServer,
    LocalCluster,
    ServerOptions,
    connect,
    declare_all,
    jetstream,
    publish_task,
    retrying,
    subjects,
)
from config import NatsConfig  # noqa: E402
from supervisor.harness import NodeProcess, write_config  # noqa: E402

POOL = "echo"


CONCURRENCY = 16  # in-flight tasks per worker (--concurrency)


def pool_table(workers: int) -> dict:
    return {POOL: {"handler": "workers.examples:echo", "size": workers, "concurrency": CONCURRENCY, "ack_wait": 10.0}}


async def _publish_all(url: str, replicas: int, n: int) -> None:
    nc = await connect(url, name="bench publisher")
    js = jetstream(nc)
    await declare_all(js, NatsConfig(url=url, replicas=replicas))
    slots = asyncio.Semaphore(256)

    async def one(i: int) -> None:
        async with slots:
            await publish_task(js, POOL, {"i": i}, task_id=f"d-{i}")

    await asyncio.gather(*(one(i) for i in range(n)))
    await nc.close()


async def _drain_rate(url: str, n: int, timeout: float = 600.0) -> float:
    """Tasks/s between the first and the last stored result (server timestamps)."""
    nc = await connect(url, name="bench reader")
    js = jetstream(nc)
    deadline = time.monotonic() + timeout
    while (await retrying(lambda: js.stream_info(subjects.RESULTS_STREAM), what="results info")).state.messages < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"the pool did not drain {n} tasks in {timeout:g}s")
        await asyncio.sleep(0.2)  # polling a stream count: there is no event for it
    first = await js.get_msg(subjects.RESULTS_STREAM, seq=1)
    info = await js.stream_info(subjects.RESULTS_STREAM)
    last = await js.get_msg(subjects.RESULTS_STREAM, seq=info.state.last_seq)
    await nc.close()
    t0 = _stamp(first)
    t1 = _stamp(last)
    return (n - 1) / max(t1 - t0, 1e-6)


def _stamp(msg) -> float:
    if msg.time is None:
        raise SystemExit("stored message without a timestamp")
    return msg.time.timestamp()


def drain(url: str, replicas: int, n: int, workers: int, home: Path) -> float:
    asyncio.run(_publish_all(url, replicas, n))
    cfg = write_config(home / "f.toml", nats_url=url, pools=pool_table(workers), node="bench", nats={"replicas": replicas})
    node = NodeProcess(cfg).wait_up(120)
    try:
        return asyncio.run(_drain_rate(url, n))
    finally:
        node.stop()


def drain_one_server(n: int, workers: int, sync: str, tmp: Path) -> float:
    home = tmp / f"r1-{sync or 'default'}"
    home.mkdir()
    with EmbeddedServer(ServerOptions(store_dir=home / "nats", sync=sync)) as server:
        return drain(server.url, 1, n, workers, home)


def drain_cluster(n: int, workers: int, sync: str, tmp: Path) -> float:
    home = tmp / f"r3-{sync or 'default'}"
    home.mkdir()
    with LocalCluster(home / "cluster", 3, sync=sync) as cluster:
        return drain(cluster.url, 3, n, workers, home)


async def _failover(cluster: LocalCluster, kills: int) -> list[tuple[float, float]]:
    """(seconds to the next result, seconds to the new leader) per kill."""
    nc = await connect(cluster.url, name="bench client")
    js = jetstream(nc)
    out: list[tuple[float, float]] = []
    for k in range(kills):
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await publish_task(js, POOL, {"warm": k}, task_id=f"warm-{k}", reply_to=inbox)
        await sub.next_msg(timeout=60)  # the pool serves before the kill
        victim = cluster.leader(subjects.TASKS_STREAM)
        cluster.kill(victim)
        killed = time.monotonic()

        def elected() -> tuple[str, float]:
            # The monitoring endpoints, polled every <= 0.2 s: the election's
            # own duration, give or take that.
            return cluster.leader(subjects.TASKS_STREAM, 60.0), time.monotonic() - killed

        election = asyncio.create_task(asyncio.to_thread(elected))
        await publish_task(js, POOL, {"probe": k}, task_id=f"probe-{k}", reply_to=inbox, deadline=120)
        await sub.next_msg(timeout=120)
        took = time.monotonic() - killed
        successor, election_took = await election
        await sub.unsubscribe()
        out.append((took, election_took))
        print(f"  kill {k + 1}: {victim} led TASKS; {successor} leads after {election_took:.2f}s; next result after {took:.2f}s", flush=True)
        await asyncio.to_thread(cluster.restart, victim)
    await nc.close()
    return out


def failover(kills: int, workers: int, tmp: Path) -> list[tuple[float, float]]:
    home = tmp / "failover"
    home.mkdir()
    with LocalCluster(home / "cluster", 3) as cluster:
        cfg = write_config(home / "f.toml", nats_url=cluster.url, pools=pool_table(workers), node="bench", nats={"replicas": 3})
        node = NodeProcess(cfg).wait_up(120)
        try:
            return asyncio.run(_failover(cluster, kills))
        finally:
            node.stop()


def main() -> None:
    global CONCURRENCY
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3, help="drain runs per configuration (medians are reported)")
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=CONCURRENCY, help="in-flight tasks per worker")
    ap.add_argument("--only", choices=["drain", "failover"], help="run one of the two measurements")
    args = ap.parse_args()
    CONCURRENCY = args.concurrency
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    if args.only != "failover":
        report_drain(args, tmp)
    if args.only != "drain":
        report_failover(args, tmp)


def report_drain(args: argparse.Namespace, tmp: Path) -> None:
    configs = (
        ("R1, 1 server, sync 2m", drain_one_server, ""),
        ("R3, 3 servers, sync 2m", drain_cluster, ""),
        ("R1, 1 server, sync always", drain_one_server, "always"),
        ("R3, 3 servers, sync always", drain_cluster, "always"),
    )
    samples: dict[str, list[float]] = {label: [] for label, _, _ in configs}
    # Interleaved rounds, medians: the machine's load moves between runs.
    for r in range(args.rounds):
        for label, run, sync in configs:
            home = tmp / f"round{r}"
            home.mkdir(exist_ok=True)
            samples[label].append(run(args.tasks, args.workers, sync, home))
            print(f"  round {r + 1}: drain {label:<28} {samples[label][-1]:8,.0f} tasks/s", flush=True)
    rates = {label: statistics.median(values) for label, values in samples.items()}
    r1, r3 = rates["R1, 1 server, sync 2m"], rates["R3, 3 servers, sync 2m"]
    r1s, r3s = rates["R1, 1 server, sync always"], rates["R3, 3 servers, sync always"]
    print(f"drain tasks/s (median of {args.rounds})  R1 {r1:,.0f}  R3 {r3:,.0f}  ratio R3/R1 {r3 / r1:.2f} (target >= 0.5)  "
          f"[{args.tasks} tasks, {args.workers} workers x {args.concurrency}, {os.cpu_count()} cores]")
    print(f"sync always    R1 {r1s:,.0f} ({r1s / r1:.2f}x of sync 2m)  R3 {r3s:,.0f} ({r3s / r3:.2f}x of sync 2m)")


def report_failover(args: argparse.Namespace, tmp: Path) -> None:
    runs = failover(args.kills, args.workers, tmp)
    times = [t for t, _ in runs]
    elections = [e for _, e in runs]
    print(f"kill -9 of the TASKS leader -> next result: median {statistics.median(times):.2f}s, max {max(times):.2f}s "
          f"over {len(times)} kills (target median < 5s); the server's own election: median {statistics.median(elections):.2f}s")


if __name__ == "__main__":
    main()
