"""Pipeline throughput: Foundation's workers against a bare nats-py loop, draining
the same pre-filled backlog on one nats-server.

For each mode — a sync echo handler, an async echo handler, a stateful
handler (``ctx.state``, applied effectively once) — and each round:

* **bare**: 2 processes, each a loop that fetches 256 tasks, publishes each
  result and waits for its PubAck, and acks (the work a worker must do, and
  nothing else). The backlog is filled while they wait at a start line.
* **foundation**: a node (``foundation up``) with one pool of 2 workers,
  concurrency and batch 256 (the bare loop's in-flight); the pool is
  drained (``foundation drain``) while the backlog is filled, then resumed.

Each prints tasks/s (from the start signal until the last result is stored
in ``RESULTS``), the ratio foundation/bare measured in the same round, and
the peak RSS of the node's process tree (supervisor, fork server, workers)
against the bare loop's two processes. Targets: sync and async >= 0.8 of
bare, stateful >= 0.5.

    .venv/bin/python bench/pipeline.py [--tasks 30000] [--rounds 3] [--modes sync,async,stateful]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from broker import (  # noqa: E402
    AckedPublisher,
    EmbeddedServer,
    ServerOptions,
    connect,
    declare_all,
    declare_pool_consumer,
    encode,
    jetstream,
    result_body,
    subjects,
)
from config import NatsConfig, PoolConfig  # noqa: E402
from supervisor.control import request  # noqa: E402
from supervisor.harness import NodeProcess, write_config  # noqa: E402

BATCH = 256  # tasks per fetch, and tasks in flight per process
WORKERS = 2
HANDLERS = {"sync": "workers.examples:echo", "async": "workers.examples:aecho", "stateful": "workers.examples:count"}
TARGETS = {"sync": 0.8, "async": 0.8, "stateful": 0.5}


# -- the bare loop (a spawned process) ---------------------------------------------


def _bare_worker(url: str, pool: str, ready: Any, go: Any, idle: float) -> None:
    async def main() -> None:
        nc = await connect(url, name="bare")
        js = jetstream(nc)
        sub = await js.pull_subscribe_bind(durable=subjects.consumer(pool), stream=subjects.TASKS_STREAM)
        results = subjects.results(pool)
        ready.release()
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        last = time.monotonic()

        async def one(msg: Any) -> None:
            md = msg.metadata
            task_id = msg.headers[subjects.MSG_ID]
            body = encode(result_body(task_id=task_id, pool=pool, worker="bare", attempt=md.num_delivered,
                                      duration_ms=0.0, result=msg.data.decode()))
            await js.publish(results, body, headers={subjects.MSG_ID: task_id})
            await msg.ack()

        while time.monotonic() - last < idle:
            try:
                msgs = await sub.fetch(BATCH, timeout=0.5)
            except Exception:
                continue
            last = time.monotonic()
            await asyncio.gather(*(one(m) for m in msgs))
        await nc.close()

    asyncio.run(main())


# -- measuring -----------------------------------------------------------------------


class PeakRss:
    """Samples the summed RSS of some processes (and their children) every 50 ms."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> list[psutil.Process]:
        procs = []
        for pid in self.pids:
            try:
                p = psutil.Process(pid)
                procs += [p, *p.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return procs

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for p in self._tree():
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def results_of(js: Any, pool: str) -> int:
    info = await js.stream_info(subjects.RESULTS_STREAM, subjects_filter=subjects.results(pool))
    return (info.state.subjects or {}).get(subjects.results(pool), 0)


async def fill(nc: Any, pool: str, n: int, tag: str) -> None:
    """Publish ``n`` tasks to ``tasks.<pool>``, awaiting PubAcks a thousand at a time."""
    publisher = AckedPublisher(nc)
    subject = subjects.tasks(pool)
    for start in range(0, n, 1000):
        await asyncio.gather(*(
            publisher.publish(subject, encode({"i": i}), {subjects.MSG_ID: f"{tag}-{i}"})
            for i in range(start, min(n, start + 1000))
        ))


async def drained(js: Any, pool: str, target: int, timeout: float = 600.0) -> float:
    """Poll until ``target`` results of ``pool`` are stored; the time it happened."""
    give_up = time.monotonic() + timeout
    while await results_of(js, pool) < target:
        if time.monotonic() > give_up:
            raise TimeoutError(f"pool {pool}: fewer than {target} results after {timeout:g}s")
        await asyncio.sleep(0.01)
    return time.perf_counter()


async def run_bare(url: str, nc: Any, js: Any, n: int, tag: str) -> tuple[float, int]:
    ctx = multiprocessing.get_context("spawn")
    ready, go = ctx.Semaphore(0), ctx.Event()
    procs = [ctx.Process(target=_bare_worker, args=(url, "bare", ready, go, 1.0)) for _ in range(WORKERS)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    before = await results_of(js, "bare")
    await fill(nc, "bare", n, tag)
    with PeakRss([p.pid for p in procs]) as rss:
        t0 = time.perf_counter()
        go.set()
        t1 = await drained(js, "bare", before + n)
    for p in procs:
        p.join()
    return n / (t1 - t0), rss.peak


async def run_foundation(node: NodeProcess, nc: Any, js: Any, pool: str, n: int, tag: str) -> tuple[float, int]:
    before = await results_of(js, pool)
    await fill(nc, pool, n, tag)
    with PeakRss([node.pid]) as rss:
        t0 = time.perf_counter()
        await request(nc, node.name, "resume", {"pool": pool})
        t1 = await drained(js, pool, before + n)
    await request(nc, node.name, "drain", {"pool": pool}, timeout=60)
    return n / (t1 - t0), rss.peak


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:,.0f}"
    return f"{statistics.median(values):,.0f} (min {min(values):,.0f}, max {max(values):,.0f})"


async def bench(url: str, tmp: Path, args: argparse.Namespace) -> list[str]:
    nc = await connect(url, name="bench")
    js = jetstream(nc)
    await declare_all(js, NatsConfig())
    await declare_pool_consumer(js, PoolConfig(name="bare", handler="x:y", size=WORKERS, concurrency=BATCH))
    lines = []
    for mode in args.modes.split(","):
        pool = {"handler": HANDLERS[mode], "size": WORKERS, "concurrency": BATCH, "batch": BATCH}
        node = NodeProcess(write_config(tmp / f"{mode}.toml", nats_url=url, pools={mode: pool}, node=f"bench-{mode}"))
        try:
            node.wait_up()
            await request(nc, node.name, "drain", {"pool": mode}, timeout=60)
            ratios, ours, bares, our_rss, bare_rss = [], [], [], [], []
            for r in range(args.rounds):
                bare, b_rss = await run_bare(url, nc, js, args.tasks, f"bare-{mode}-{r}")
                rate, f_rss = await run_foundation(node, nc, js, mode, args.tasks, f"{mode}-{r}")
                ratios.append(rate / bare)
                ours.append(rate)
                bares.append(bare)
                our_rss.append(f_rss)
                bare_rss.append(b_rss)
                print(f"  {mode} round {r + 1}: foundation {rate:,.0f}/s  bare {bare:,.0f}/s  ratio {rate / bare:.2f}  "
                      f"rss {f_rss / 2**20:.0f} / {b_rss / 2**20:.0f} MB", flush=True)
        finally:
            node.stop()
        ok = "meets" if statistics.median(ratios) >= TARGETS[mode] else "BELOW"
        lines.append(
            f"{mode:>8}: foundation {spread(ours)} tasks/s, bare {spread(bares)} tasks/s, "
            f"ratio {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}; "
            f"target {TARGETS[mode]} {ok}); peak RSS node tree {max(our_rss) / 2**20:.0f} MB vs bare "
            f"{max(bare_rss) / 2**20:.0f} MB ({max(our_rss) / max(bare_rss):.1f}x)"
        )
    await nc.close()
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=30000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", default="sync,async,stateful")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    with EmbeddedServer(ServerOptions(store_dir=tmp / "nats")) as server:
        lines = asyncio.run(bench(server.url, tmp, args))
    print(f"{args.tasks} tasks per run, {WORKERS} processes x {BATCH} in flight, {args.rounds} round(s), "
          f"{os.cpu_count()} cores; median (min, max) over the rounds:")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
