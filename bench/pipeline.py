"""Pipeline throughput: ``foundation publish --count N --wait`` against a node,
and, in the same run, a bare nats-py loop doing the same work (fetch,
publish the result and wait for its PubAck, ack) as the ceiling.

Both run against one embedded nats-server on free ports, with the same number
of consuming processes. Prints tasks/s of each and their ratio.

    .venv/bin/python bench/pipeline.py [--tasks 20000] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from broker import (  # noqa: E402
    EmbeddedServer,
    ServerOptions,
    connect,
    declare_pool_consumer,
    declare_streams,
    encode,
    jetstream,
    subjects,
)
from config import NatsConfig, PoolConfig  # noqa: E402
from supervisor.harness import FOUNDATION, NodeProcess, write_config  # noqa: E402


def _bare_worker(url: str, pool: str, batch: int, stop_after: float) -> None:
    async def main() -> None:
        nc = await connect(url, name="bare")
        js = jetstream(nc)
        sub = await js.pull_subscribe_bind(durable=subjects.consumer(pool), stream=subjects.TASKS_STREAM)
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < stop_after:
            try:
                msgs = await sub.fetch(batch, timeout=0.5)
            except Exception:
                continue
            idle_since = time.monotonic()

            async def one(msg) -> None:
                body = encode({"task_id": msg.headers["Nats-Msg-Id"], "ok": True, "result": msg.data.decode()})
                await js.publish(subjects.results(pool), body, headers={"Nats-Msg-Id": msg.headers["Nats-Msg-Id"]})
                await msg.ack()

            await asyncio.gather(*(one(m) for m in msgs))
        await nc.close()

    asyncio.run(main())


def run_cli(url: str, subject: str, tasks: int) -> tuple[float, str]:
    out = subprocess.run(
        [FOUNDATION, "publish", subject, "{}", "--count", str(tasks), "--wait", "--url", url],
        capture_output=True, text=True, check=True, timeout=600,
    ).stdout
    rate = float(re.search(r"([\d,]+) tasks/s", out).group(1).replace(",", ""))
    return rate, out.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    with EmbeddedServer(ServerOptions(store_dir=tmp / "nats")) as server:
        url = server.url
        # Foundation: a real node with the echo pool.
        cfg = write_config(
            tmp / "f.toml", nats_url=url,
            pools={"echo": {"handler": "workers.examples:echo", "size": args.workers, "concurrency": args.concurrency}},
        )
        node = NodeProcess(cfg).wait_up()
        try:
            ours, line = run_cli(url, "tasks.echo", args.tasks)
        finally:
            node.stop()
        # Ceiling: bare loops on a pool consumer of the same shape.
        async def declare() -> None:
            nc = await connect(url, name="bench")
            js = jetstream(nc)
            await declare_streams(js, NatsConfig())
            await declare_pool_consumer(js, PoolConfig(name="bare", handler="x:y", size=args.workers, concurrency=args.concurrency))
            await nc.close()

        asyncio.run(declare())
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_bare_worker, args=(url, "bare", args.concurrency, 3.0)) for _ in range(args.workers)]
        for p in procs:
            p.start()
        bare, bare_line = run_cli(url, "tasks.bare", args.tasks)
        for p in procs:
            p.join()
    print(f"foundation: {line}")
    print(f"bare nats-py loop: {bare_line}")
    print(f"tasks/s  foundation {ours:,.0f}  bare {bare:,.0f}  ratio {ours / bare:.2f} "
          f"({args.tasks} tasks, {args.workers} workers x concurrency {args.concurrency}, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
