"""``foundation up``: run this node's supervision tree in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from supervisor.cli.common import add_config_option, check_handlers, load


def register(sub: Any) -> None:
    p = sub.add_parser("up", help="start the node: embedded NATS (if configured), pools, /metrics")
    add_config_option(p)
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="least severe log lines shown on stderr (default INFO)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load(args)  # a ConfigError exits 2 before anything starts
    check_handlers(cfg)  # so does a handler that cannot be imported
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s [supervisor] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Before anything imports prometheus_client, in this process or a child.
    from supervisor import metrics

    metrics.prepare_dir(Path(cfg.metrics.dir) / cfg.node.name)
    from supervisor.node import Node

    return _run(Node(cfg, announce=lambda line: print(line, flush=True)).run())


def _run(main: Coroutine[Any, Any, int], grace: float = 5.0) -> int:
    """``asyncio.run``, but leftover tasks get ``grace`` seconds to end.

    ``asyncio.run`` waits without limit for every leftover task to honour its
    cancellation; a library task that swallows one (a NATS reconnect loop
    caught mid-connect) would turn a clean stop into a hang.
    """
    loop = asyncio.new_event_loop()
    try:
        code = loop.run_until_complete(main)
        leftover = asyncio.all_tasks(loop)
        for task in leftover:
            task.cancel()
        if leftover:
            loop.run_until_complete(asyncio.wait(leftover, timeout=grace))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        return code
    finally:
        loop.close()
