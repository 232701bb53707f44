"""``foundation cluster up``: a local NATS cluster (see :mod:`broker.cluster`).

Runs ``--servers`` clustered ``nats-server``s with JetStream on this machine,
prints ``nats: <url list>`` once they are ready (the value for ``nats.url``
of the nodes that should use it) and stops them on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from broker.cluster import LocalCluster


def register(sub: Any) -> None:
    p = sub.add_parser("cluster", help="a local NATS cluster for trying and testing")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    up = verbs.add_parser("up", help="run N clustered nats-servers until Ctrl-C")
    up.add_argument("--servers", type=int, default=3, help="how many servers (default 3)")
    up.add_argument("--dir", default="var/cluster", help="where the stores and logs go (default var/cluster)")
    up.add_argument("--sync", default="", help='JetStream sync_interval: "always" or a duration such as "1s" (default: the server\'s 2m)')
    up.set_defaults(func=run_up)


def run_up(args: argparse.Namespace) -> int:
    if args.servers < 1:
        print("foundation: --servers must be at least 1", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with LocalCluster(Path(args.dir), args.servers, sync=args.sync) as cluster:
        for name in cluster.names:
            addr = cluster.server(name)
            print(f"{name}: {addr.url} (monitoring {addr.monitor_url}, store {Path(args.dir) / name})")
        print(f"nats: {cluster.url}", flush=True)
        while not stop.wait(1.0):
            for name in cluster.names:
                if cluster.pid(name) is not None and not cluster.running(name):
                    print(f"{name}: exited; see {Path(args.dir) / name / 'nats-server.log'}", flush=True)
                    cluster.stop_server(name)  # reap it, and report it once
    print("cluster stopped", flush=True)
    return 0
