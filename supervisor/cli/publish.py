"""``foundation publish``: publish tasks, optionally wait for their results."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from typing import Any

import orjson

from broker import collect_results, encode, is_transient, jetstream, publish_retrying, subjects
from config import Config
from config.errors import FoundationError
from supervisor.cli.common import add_client_options, connect_client, load


def register(sub: Any) -> None:
    p = sub.add_parser("publish", help="publish JSON tasks to tasks.<pool> (and wait for results)")
    p.add_argument("subject", help="tasks.<pool>")
    p.add_argument("json", help="the task body, a JSON document")
    p.add_argument("--count", type=int, default=1, help="how many tasks (default 1)")
    p.add_argument("--wait", action="store_true", help="wait for every result, then print throughput and latency")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for results (default 300)")
    add_client_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.subject.startswith("tasks.") or len(args.subject.split(".")) != 2:
        raise FoundationError(f"subject must be tasks.<pool>, got {args.subject!r}")
    if args.count < 1:
        raise FoundationError(f"--count must be >= 1, got {args.count}")
    try:
        payload = orjson.loads(args.json)
    except orjson.JSONDecodeError as exc:
        raise FoundationError(f"the task body is not valid JSON: {exc}") from None
    cfg = load(args)
    return asyncio.run(_publish(cfg, subjects.pool_of(args.subject), payload, args))


class _Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label = total, label
        self.t0 = time.perf_counter()
        self.last = -1.0

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if done < self.total and now - self.last < 0.1:
            return
        self.last = now
        width = 30
        filled = int(width * done / self.total)
        rate = done / max(now - self.t0, 1e-9)
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} {rate:,.0f}/s")
        if done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


async def _publish(cfg: Config, pool: str, payload: Any, args: argparse.Namespace) -> int:
    nc = await connect_client(args, cfg, "foundation publish", role="client")  # publishing tasks is the client's job
    js = jetstream(nc, timeout=30)
    run_id = uuid.uuid4().hex[:12]
    ids = [f"{run_id}-{i}" for i in range(args.count)]
    data = encode(payload)
    sent: dict[str, float] = {}
    try:
        async with collect_results(js, pool) as results:
            progress = _Progress(args.count, "publish") if args.count > 1 else None
            t0 = time.perf_counter()
            futures = []
            for i, task_id in enumerate(ids):
                sent[task_id] = time.perf_counter()
                futures.append(await js.publish_async(subjects.tasks(pool), data, headers={subjects.MSG_ID: task_id}))
                if progress and i % 500 == 0:
                    progress(i)
            acks = await asyncio.gather(*futures, return_exceptions=True)
            # An ack that did not come (a timeout, a leader election, a
            # reconnect) leaves the outcome unknown: publish again with the
            # same id, which the stream stores at most once.
            unknown = [task_id for task_id, a in zip(ids, acks) if isinstance(a, BaseException) and is_transient(a)]
            retried = await asyncio.gather(
                *(publish_retrying(js, subjects.tasks(pool), data, msg_id=t) for t in unknown), return_exceptions=True)
            failed = [a for a in acks if isinstance(a, BaseException) and not is_transient(a)]
            failed += [a for a in retried if isinstance(a, BaseException)]
            if progress:
                progress(args.count)
            if failed:
                print(f"{len(failed)} of {args.count} publishes failed: {failed[0]}", file=sys.stderr)
            if not args.wait:
                print(f"published {args.count - len(failed)} task(s) to tasks.{pool}" + (f" (id {ids[0]})" if args.count == 1 else f" (ids {run_id}-0…{args.count - 1})"))
                return 1 if failed else 0
            bar = _Progress(len(ids), "results") if len(ids) > 1 else None
            try:
                got = await results.wait_for(set(ids), timeout=args.timeout, progress=bar)
            except (asyncio.TimeoutError, TimeoutError):
                done = sum(1 for t in ids if t in results.results)
                print(f"\ntimed out after {args.timeout:g}s: {done}/{len(ids)} results", file=sys.stderr)
                return 1
            elapsed = max(results.arrived[t] for t in ids) - t0
    finally:
        await nc.close()
    _report(ids, sent, results.arrived, got, elapsed)
    return 0 if all(got[t]["ok"] for t in ids) else 1


def _report(ids: list[str], sent: dict[str, float], arrived: dict[str, float], got: dict[str, Any], elapsed: float) -> None:
    lat = sorted((arrived[t] - sent[t]) * 1000 for t in ids)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))]

    failed = sum(1 for t in ids if not got[t]["ok"])
    if len(ids) == 1:
        sys.stdout.write(encode(got[ids[0]]).decode() + "\n")
    print(
        f"{len(ids)} tasks in {elapsed:.2f}s: {len(ids) / elapsed:,.0f} tasks/s; "
        f"latency ms p50 {pct(50):.1f} p90 {pct(90):.1f} p99 {pct(99):.1f} max {lat[-1]:.1f}"
        + (f"; {failed} failed" if failed else "")
    )
