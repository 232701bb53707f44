"""``foundation cluster up``: a local NATS cluster (see :mod:`broker.cluster`).

Runs ``--servers`` clustered ``nats-server``s with JetStream on this machine,
prints ``nats: <url list>`` once they are ready (the value for ``nats.url``
of the nodes that should use it) and stops them on Ctrl-C or SIGTERM.
With ``--json`` it prints one JSON document instead (``servers`` and
``nats``), and later lines (a server exited, cluster stopped) go to stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from broker.cluster import LocalCluster
from supervisor.cli.output import add_json_option, emit, note


def register(sub: Any) -> None:
    p = sub.add_parser("cluster", help="a local NATS cluster for trying and testing")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    up = verbs.add_parser("up", help="run N clustered nats-servers until Ctrl-C")
    up.add_argument("--servers", type=int, default=3, help="how many servers (default 3)")
    up.add_argument("--dir", default="var/cluster", help="where the stores and logs go (default var/cluster)")
    up.add_argument("--sync", default="", help='JetStream sync_interval: "always" or a duration such as "1s" (default: the server\'s 2m)')
    add_json_option(up)
    up.set_defaults(func=run_up)


def run_up(args: argparse.Namespace) -> int:
    if args.servers < 1:
        print("foundation: --servers must be at least 1", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with LocalCluster(Path(args.dir), args.servers, sync=args.sync) as cluster:
        servers = [{"name": name, "url": cluster.server(name).url, "monitor_url": cluster.server(name).monitor_url,
                    "store": str(Path(args.dir) / name)} for name in cluster.names]
        emit({"servers": servers, "nats": cluster.url}, args, lambda r: "\n".join(
            [*(f"{s['name']}: {s['url']} (monitoring {s['monitor_url']}, store {s['store']})" for s in r["servers"]),
             f"nats: {r['nats']}"]))
        while not stop.wait(1.0):
            for name in cluster.names:
                if cluster.pid(name) is not None and not cluster.running(name):
                    note(args, f"{name}: exited; see {Path(args.dir) / name / 'nats-server.log'}")
                    cluster.stop_server(name)  # reap it, and report it once
    note(args, "cluster stopped")
    return 0
