"""``foundation chaos list|run|toxiproxy|kill-workers``: chaos scenarios and their checked reports.

``run SCENARIO`` is :func:`chaos.scenarios.run_scenario`: a cluster, node
and nemeses of its own (or ``--url`` an existing deployment), the verdict,
``--report DIR`` for report.json and timeline.png; exit 0 only when valid,
1 when not, 77 when this machine cannot run the scenario (the reason is
printed). With ``--json`` each prints one JSON document (the verdict, the
scenario list, the toxiproxy address) and its progress lines go to stderr.
``toxiproxy`` serves the toxiproxy API. ``kill-workers`` is the
older task-count form of one scenario:

By default it starts a throwaway node of its own (embedded NATS, one pool of
``--workers`` workers running :func:`chaos.handlers.count`), runs the
scenario, prints the report and stops the node. With ``--config`` it runs
against that (running) node's ``--pool`` instead; that pool's handler
should be ``chaos.handlers:count`` for duplicate effects to be counted.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import asdict
from typing import Any

from supervisor.cli.common import add_client_options, client_url, load
from supervisor.cli.output import add_json_option, emit, note

EXIT_INVALID = 1


def register(sub: Any) -> None:
    p = sub.add_parser("chaos", help="run a chaos scenario and check that nothing acknowledged was lost")
    scenarios = p.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")
    k = scenarios.add_parser("kill-workers", help="kill -9 random workers while tasks flow; print the checker's report")
    k.add_argument("--tasks", type=int, default=10_000, help="tasks to publish (default 10000)")
    k.add_argument("--kills", type=int, default=20, help="workers to kill -9 during the run (default 20)")
    k.add_argument("--workers", type=int, default=4, help="pool size of the node started for the run (default 4)")
    k.add_argument("--concurrency", type=int, default=8, help="in-flight tasks per worker (default 8)")
    k.add_argument("--ack-wait", type=float, default=2.0, help="the pool's ack_wait in seconds (default 2)")
    k.add_argument("--work-ms", type=float, default=0.0, help="simulated work per task, milliseconds")
    k.add_argument("--seed", type=int, help="seed for the choice of victims")
    k.add_argument("--pool", default="chaos", help="the pool (default chaos)")
    k.add_argument("--node", help="with --config: the node to ask for worker pids (default: its node name)")
    k.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the last outcomes")
    add_client_options(k)
    add_json_option(k)
    k.set_defaults(func=run_kill_workers)
    ls = scenarios.add_parser("list", help="the scenarios `foundation chaos run` knows")
    add_json_option(ls)
    ls.set_defaults(func=run_list)
    r = scenarios.add_parser("run", help="run a scenario on a cluster of its own (or an existing node) and check its history")
    r.add_argument("name", metavar="SCENARIO", help="a scenario of `foundation chaos list`")
    r.add_argument("--report", metavar="DIR", help="write report.json and timeline.png into DIR")
    r.add_argument("--seed", type=int, help="seed of the nemeses' choices (default: random, printed)")
    r.add_argument("--duration", type=float, default=30.0, help="seconds of workload (default 30)")
    r.add_argument("--rate", type=float, default=200.0, help="tasks published per second (default 200)")
    r.add_argument("--url", default="", help="an existing deployment's NATS URL list: measure only this run's tasks there")
    r.add_argument("--pool", default="chaos", help="with --url: the pool to send tasks to (default chaos)")
    r.add_argument("--node", default="", help="with --url: the node whose workers kill-workers kills")
    r.add_argument("--dir", help="keep the cluster's and node's files here (default: a temporary directory)")
    add_json_option(r)
    r.set_defaults(func=run_scenario)
    t = scenarios.add_parser("toxiproxy", help="serve the toxiproxy 2.x HTTP API (proxies with latency, bandwidth, reset, timeout… toxics)")
    t.add_argument("--listen", default="127.0.0.1:8474", help="HOST:PORT of the API (default 127.0.0.1:8474)")
    add_json_option(t)
    t.set_defaults(func=run_toxiproxy)


EXIT_SKIPPED = 77  # the machine cannot run the scenario: not a pass


def run_list(args: argparse.Namespace) -> int:
    from chaos.scenarios import SCENARIOS

    rows = []
    for s in SCENARIOS.values():
        flags = [f"R{s.replicas}", "netns" if s.partitions else "", "toxiproxy" if s.client_proxies else "",
                 "--url ok" if s.existing_ok else "", "expects loss" if s.expect_loss else ""]
        rows.append({"name": s.name, "about": s.about, "flags": [f for f in flags if f], "unavailable": s.unavailable()})

    def text(rows: list[dict[str, Any]]) -> str:
        return "\n".join(f"{r['name']:20} {r['about']} [{', '.join(r['flags'])}]"
                         + (f" — unavailable here: {r['unavailable']}" if r["unavailable"] else "") for r in rows)

    emit(rows, args, text)
    return 0


def run_scenario(args: argparse.Namespace) -> int:
    from pathlib import Path

    from chaos import report
    from chaos.errors import ChaosError, NemesisUnavailable
    from chaos.run import Progress
    from chaos.scenarios import SCENARIOS
    from chaos.scenarios import run_scenario as run_one

    if args.name not in SCENARIOS:
        raise SystemExit(f"foundation chaos run: no scenario {args.name!r}; `foundation chaos list` shows them")
    if args.duration <= 0 or args.rate <= 0:
        raise SystemExit("foundation chaos run: --duration and --rate must be > 0")
    if args.url and args.name == "kill-workers" and not args.node:
        raise SystemExit("foundation chaos run kill-workers --url: name the node whose workers to kill (--node)")
    try:
        result, setup = run_one(
            args.name, seed=args.seed, duration=args.duration, rate=args.rate, url=args.url, pool=args.pool,
            node=args.node, progress=Progress(), directory=Path(args.dir) if args.dir else None,
        )
    except NemesisUnavailable as exc:
        emit({"scenario": args.name, "skipped": str(exc)}, args, lambda r: f"SKIPPED: {r['skipped']}")
        return EXIT_SKIPPED
    except ChaosError as exc:
        raise SystemExit(f"foundation chaos run {args.name}: {exc}") from exc
    if "servers" in setup:
        note(args, f"cluster: {setup['servers']} nats-servers, streams and buckets R{setup['replicas']}"
              + (", each server in its own network namespace" if setup["partitions_in_namespaces"] else "")
              + (", node and workload through toxiproxy" if setup["client_proxies"] else ""))
    else:
        note(args, f"existing deployment {setup['existing']}, pool {setup['pool']}")
    paths = report.write(result, Path(args.report), **setup) if args.report else None
    verdict = report.to_json(result, **setup)
    verdict.pop("series", None)  # the timeline's data: in report.json, too long for a terminal
    verdict["report"] = {"json": str(paths[0]), "timeline": str(paths[1])} if paths else None
    emit(verdict, args, lambda _: "\n".join(
        [*result.lines(), *([f"report: {paths[0]}  timeline: {paths[1]}"] if paths else [])]))
    return 0 if result.report.valid else EXIT_INVALID


def run_toxiproxy(args: argparse.Namespace) -> int:
    from chaos.toxiproxy import ToxiproxyServer

    async def main() -> None:
        server = ToxiproxyServer(args.listen)
        srv = await server.serve()
        emit({"toxiproxy": server.url}, args, lambda r: f"toxiproxy API on {r['toxiproxy']}")
        async with srv:
            await srv.serve_forever()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        raise  # whoever read the address has gone: main() ends quietly
    except OSError as exc:
        raise SystemExit(f"foundation chaos toxiproxy: cannot listen on {args.listen}: {exc}") from exc
    return 0


def run_kill_workers(args: argparse.Namespace) -> int:
    # chaos sits above supervisor in the import order: imported on use only.
    from chaos.kill_workers import kill_workers
    from supervisor.harness import start_node

    if args.tasks < 1 or args.kills < 0:
        raise SystemExit("foundation chaos: --tasks must be >= 1 and --kills >= 0")
    scenario = dict(tasks=args.tasks, kills=args.kills, work_ms=args.work_ms, seed=args.seed, drain_timeout=args.timeout)
    if args.config:
        cfg = load(args)
        from chaos.errors import ChaosError

        try:
            result = asyncio.run(kill_workers(client_url(args, cfg), args.node or cfg.node.name, args.pool, **scenario))
        except ChaosError as exc:
            raise SystemExit(f"foundation chaos kill-workers: {exc}") from exc
    else:
        pool = {
            "handler": "chaos.handlers:count", "size": args.workers, "concurrency": args.concurrency,
            "ack_wait": args.ack_wait, "max_restarts": 10_000, "max_seconds": 10, "shutdown": 10,
        }
        # Kills are the point: the root must not give up on a burst of them.
        supervisor = {"max_restarts": 1000, "max_seconds": 10}
        with start_node(pools={args.pool: pool}, node="chaos", supervisor=supervisor) as node:
            note(args, f"node {node.name} up ({args.workers} workers, nats {node.url}); running kill-workers")
            result = asyncio.run(kill_workers(node.url, node.name, args.pool, is_alive=lambda: node.alive, **scenario))
    emit({**asdict(result), "valid": result.report.valid}, args, lambda _: "\n".join(result.lines()))
    return 0 if result.report.valid else EXIT_INVALID
