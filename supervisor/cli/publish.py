"""``foundation publish``: publish tasks, optionally wait for their results.

Before publishing it checks that someone will take the tasks:

* no pool of that name (no consumer on ``TASKS``): refused, nothing is
  published (``--anyway`` publishes regardless; the tasks wait in ``TASKS``
  until such a pool starts);
* the pool exists but no live worker of it is in the registry (drained,
  scaled to zero, or no node runs it): published, with a note saying the
  tasks will wait — and a ``--wait`` that times out says so again.

With ``--wait`` it reports throughput and, per task, three times: publish
to result (what a caller sees), the handler's own run time (``duration_ms``
of the result), and the rest — waiting in the stream, transport, storing
the result. The progress bar's last rate is the summary's rate: both count
from the first publish to the last result.
"""

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
from protocols.registry import QUERY_SUBJECT
from supervisor.cli.common import add_client_options, connect_client, load
from supervisor.cli.output import add_json_option

LIVE = ("starting", "ready", "busy")  # agent states that will take tasks


def register(sub: Any) -> None:
    p = sub.add_parser("publish", help="publish JSON tasks to tasks.<pool> (and wait for results)")
    p.add_argument("subject", help="tasks.<pool>")
    p.add_argument("body", metavar="JSON", help="the task body, a JSON document")
    p.add_argument("--count", type=int, default=1, help="how many tasks (default 1)")
    p.add_argument("--wait", action="store_true", help="wait for every result, then print throughput and latency")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for results (default 300)")
    p.add_argument("--anyway", action="store_true", help="publish even when no pool of that name exists yet")
    add_json_option(p)
    add_client_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.subject.startswith("tasks.") or len(args.subject.split(".")) != 2:
        raise FoundationError(f"subject must be tasks.<pool>, got {args.subject!r}")
    if args.count < 1:
        raise FoundationError(f"--count must be >= 1, got {args.count}")
    try:
        payload = orjson.loads(args.body)
    except orjson.JSONDecodeError as exc:
        raise FoundationError(f"the task body is not valid JSON: {exc}") from None
    cfg = load(args)
    return asyncio.run(_publish(cfg, subjects.pool_of(args.subject), payload, args))


class _Progress:
    """A one-line progress bar on stderr, its rate counted from ``t0``."""

    def __init__(self, total: int, label: str, t0: float) -> None:
        self.total, self.label, self.t0 = total, label, t0
        self.last = -1.0

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if done < self.total and now - self.last >= 0.1:
            self.last = now
            self._draw(done, now - self.t0)

    def finish(self, elapsed: float) -> None:
        self._draw(self.total, elapsed)
        sys.stderr.write("\n")

    def _draw(self, done: int, elapsed: float) -> None:
        width = 30
        filled = int(width * done / self.total)
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
                         f"{_rate(done, elapsed)} tasks/s")
        sys.stderr.flush()


def _rate(n: int, elapsed: float) -> str:
    return f"{n / max(elapsed, 1e-9):,.0f}"


async def _consumers(js: Any) -> set[str]:
    """Pools that have a consumer on ``TASKS``."""
    prefix = subjects.consumer("x")[:-1]
    return {c.name[len(prefix):] for c in await js.consumers_info(subjects.TASKS_STREAM) if c.name.startswith(prefix)}


async def _live_workers(nc: Any, pool: str) -> int | None:
    """Live agents of ``pool`` in the registry; None when no node answers registry queries."""
    try:
        msg = await nc.request(QUERY_SUBJECT, encode({"op": "ls", "pool": pool}), timeout=2)
        reply = orjson.loads(msg.data)
    except Exception:  # no node, or no answer: we cannot tell
        return None
    return sum(1 for e in reply.get("entries", []) if e.get("status") in LIVE)


def _idle_note(pool: str, live: int | None) -> str:
    if live is None:
        return f"no node answers registry queries: is `foundation up` running? tasks wait in TASKS until a worker of pool {pool} takes them"
    return (f"no live worker of pool {pool} (drained, scaled to 0, or no node runs it): "
            f"tasks wait in TASKS until one starts (`foundation status`, `foundation resume {pool}`)")


async def _publish(cfg: Config, pool: str, payload: Any, args: argparse.Namespace) -> int:
    nc = await connect_client(args, cfg, "foundation publish", role="client")  # publishing tasks is the client's job
    js = jetstream(nc, timeout=30)
    run_id = uuid.uuid4().hex[:12]
    ids = [f"{run_id}-{i}" for i in range(args.count)]
    data = encode(payload)
    sent: dict[str, float] = {}
    try:
        pools = await _consumers(js)
        if pool not in pools and not args.anyway:
            raise FoundationError(
                f"no pool {pool!r}: nothing consumes tasks.{pool}, so its tasks would wait in TASKS; "
                f"pools: {', '.join(sorted(pools)) or 'none'} (--anyway publishes regardless)")
        live = await _live_workers(nc, pool)
        if not live:
            print(f"note: {_idle_note(pool, live)}", file=sys.stderr)
        async with collect_results(js, pool) as results:
            t0 = time.perf_counter()
            progress = _Progress(args.count, "publish", t0) if args.count > 1 else None
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
                progress.finish(time.perf_counter() - t0)
            if failed:
                print(f"{len(failed)} of {args.count} publishes failed: {failed[0]}", file=sys.stderr)
            if not args.wait:
                _published(args, pool, ids, len(failed))
                return 1 if failed else 0
            bar = _Progress(len(ids), "results", t0) if len(ids) > 1 else None
            try:
                got = await results.wait_for(set(ids), timeout=args.timeout, progress=bar)
            except (asyncio.TimeoutError, TimeoutError):
                done = sum(1 for t in ids if t in results.results)
                why = await _why_waiting(js, nc, pool)
                print(f"\ntimed out after {args.timeout:g}s: {done}/{len(ids)} results; {why}", file=sys.stderr)
                return 1
            elapsed = max(results.arrived[t] for t in ids) - t0
            if bar:
                bar.finish(elapsed)
    finally:
        await nc.close()
    report = _report(ids, sent, results.arrived, got, elapsed)
    print(encode(report).decode() if args.json else _report_text(report))
    return 0 if not report["failed"] else 1


def _published(args: argparse.Namespace, pool: str, ids: list[str], failed: int) -> None:
    if args.json:
        print(encode({"subject": f"tasks.{pool}", "published": len(ids) - failed, "failed": failed, "ids": ids}).decode())
    elif len(ids) == 1:
        print(f"published 1 task to tasks.{pool} (id {ids[0]})")
    else:
        run_id = ids[0].rsplit("-", 1)[0]
        print(f"published {len(ids) - failed} tasks to tasks.{pool} (ids {run_id}-0…{len(ids) - 1})")


async def _why_waiting(js: Any, nc: Any, pool: str) -> str:
    live = await _live_workers(nc, pool)
    if not live:
        return _idle_note(pool, live)
    try:
        info = await js.consumer_info(subjects.TASKS_STREAM, subjects.consumer(pool))
    except Exception as exc:  # report what we know
        return f"{live} live worker(s) of pool {pool}; consumer unreadable: {exc}"
    return (f"{live} live worker(s) of pool {pool}; {info.num_pending} task(s) waiting in TASKS, "
            f"{info.num_ack_pending} in flight (slow handlers? `foundation status`)")


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 2)

    return {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": round(ordered[-1], 2)}


def _report(ids: list[str], sent: dict[str, float], arrived: dict[str, float], got: dict[str, Any],
            elapsed: float) -> dict[str, Any]:
    total = [(arrived[t] - sent[t]) * 1000 for t in ids]
    handler = [float(got[t].get("duration_ms") or 0.0) for t in ids]
    report: dict[str, Any] = {
        "tasks": len(ids), "failed": sum(1 for t in ids if not got[t]["ok"]),
        "elapsed_s": elapsed, "rate": len(ids) / max(elapsed, 1e-9),
        "latency_ms": _percentiles(total), "handler_ms": _percentiles(handler),
        "waiting_ms": _percentiles([t - h for t, h in zip(total, handler, strict=True)]),
    }
    if len(ids) == 1:
        report["result"] = got[ids[0]]
    return report


def _report_text(r: dict[str, Any]) -> str:
    def row(label: str, p: dict[str, float]) -> str:
        return f"  {label:<18} p50 {p['p50']:8.1f}  p90 {p['p90']:8.1f}  p99 {p['p99']:8.1f}  max {p['max']:8.1f}"

    lines = [encode(r["result"]).decode()] if "result" in r else []
    lines.append(f"{r['tasks']} task(s) in {r['elapsed_s']:.2f}s: {_rate(r['tasks'], r['elapsed_s'])} tasks/s"
                 + (f"; {r['failed']} failed" if r["failed"] else ""))
    lines += ["ms, per task:", row("publish to result", r["latency_ms"]), row("handler", r["handler_ms"]),
              row("waiting, transport", r["waiting_ms"])]
    return "\n".join(lines)
