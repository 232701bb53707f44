"""Market dispatch against queue dispatch, on one node, in the same run.

One ``foundation up`` node (embedded nats-server) runs two pools with the same
handler (``workers.examples:echo``), size and concurrency: ``queue`` with the
ordinary dispatch and ``market`` with ``dispatch = "market"``, where every
task is allocated by a Contract Net round among the pool's agents. Prints,
for each pool and as the market/queue ratio:

* sequential latency: one task at a time, publish to result (p50/p99) — the
  price of one auction per task;
* burst throughput: ``--tasks`` published at once, tasks/s until the last
  result, and the publish-to-result latency of each (p50/p99).

    .venv/bin/python bench/market_dispatch.py [--tasks 3000] [--sequential 200] [--size 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._stats import p50_p99_ms  # noqa: E402
from broker import collect_results, connect, encode, jetstream, publish_task, subjects  # noqa: E402
from supervisor.harness import NodeProcess, write_config  # noqa: E402

POOLS = ("queue", "market")


async def sequential(js: Any, pool: str, n: int) -> list[float]:
    """Publish-to-result seconds of ``n`` tasks sent one after the other."""
    samples = []
    async with collect_results(js, pool) as results:
        for i in range(n):
            task_id = f"{pool}-seq-{i}"
            t0 = time.perf_counter()
            await publish_task(js, pool, {"i": i}, task_id=task_id)
            await results.wait_for({task_id}, timeout=60)
            samples.append(results.arrived[task_id] - t0)
    return samples


async def burst(js: Any, pool: str, n: int, tag: str) -> tuple[float, list[float]]:
    """Tasks/s of ``n`` tasks published at once, and each one's publish-to-result seconds."""
    ids = [f"{pool}-{tag}-{i}" for i in range(n)]  # unique: a reused id would be deduplicated away
    sent: dict[str, float] = {}
    async with collect_results(js, pool) as results:
        t0 = time.perf_counter()
        acks = []
        for task_id in ids:  # pipelined, as `foundation publish --count` does
            sent[task_id] = time.perf_counter()
            acks.append(await js.publish_async(subjects.tasks(pool), encode({"id": task_id}),
                                               headers={subjects.MSG_ID: task_id}))
        await asyncio.gather(*acks)
        await results.wait_for(set(ids), timeout=300)
        elapsed = max(results.arrived[t] for t in ids) - t0
    return n / elapsed, [results.arrived[t] - sent[t] for t in ids]


def _line(label: str, samples: list[float], base: list[float] | None) -> str:
    p50, p99 = p50_p99_ms(samples)
    text = f"  {label:<28} p50 {p50:8.2f} ms   p99 {p99:8.2f} ms"
    if base is not None:
        b50, b99 = p50_p99_ms(base)
        text += f"   market/queue p50 {p50 / b50:5.1f}x   p99 {p99 / b99:5.1f}x"
    return text


async def main(tasks: int, n_sequential: int, size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pools = {p: {"handler": "workers.examples:echo", "size": size, "concurrency": 8, "dispatch": p} for p in POOLS}
        node = NodeProcess(write_config(Path(tmp) / "f.toml", pools=pools, node="bench"))
        try:
            node.wait_up()
            url = node.url
            nc = await connect(url, name="bench")
            js = jetstream(nc, timeout=30)
            for pool in POOLS:  # warm both: imports, registry caches, reputation
                await burst(js, pool, 200, "warm")
            seq = {pool: await sequential(js, pool, n_sequential) for pool in POOLS}
            rates, lat = {}, {}
            for pool in POOLS:
                rates[pool], lat[pool] = await burst(js, pool, tasks, "burst")
            await nc.close()
        finally:
            node.stop()
    print(f"market vs queue dispatch: echo handler, {size} workers x concurrency 8 per pool, one node")
    print(f"sequential, one task at a time ({n_sequential} tasks):")
    for pool in POOLS:
        print(_line(pool, seq[pool], seq["queue"] if pool == "market" else None))
    print(f"burst of {tasks} tasks:")
    for pool in POOLS:
        ratio = f"   market/queue {rates[pool] / rates['queue']:5.2f}x" if pool == "market" else ""
        print(f"  {pool:<28} {rates[pool]:9.0f} tasks/s{ratio}")
        print(_line(f"{pool} latency", lat[pool], lat["queue"] if pool == "market" else None))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--size", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.tasks, args.sequential, args.size))
