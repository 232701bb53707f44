"""``foundation auth init``: identities per role and the server's ``auth.conf`` (DESIGN.md §10)."""

from __future__ import annotations

import argparse
from typing import Any

from broker import init_auth
from supervisor.cli.common import add_config_option, load


def register(sub: Any) -> None:
    p = sub.add_parser("auth", help="identities and permissions: `foundation auth init`")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = actions.add_parser(
        "init",
        help="write an nkey seed per role (and per worker slot) and auth.conf; keeps existing seeds",
    )
    add_config_option(init)
    init.add_argument("--dir", help="where to write them (default: [auth] dir of the config, var/auth)")
    init.add_argument(
        "--node", action="append", metavar="NAME",
        help="a node whose worker slots get identities (repeat for a cluster; default: node.name of the config)",
    )
    init.set_defaults(func=run_init)


def run_init(args: argparse.Namespace) -> int:
    cfg = load(args)
    auth_dir = args.dir or cfg.auth.dir
    nodes = args.node or [cfg.node.name]
    pools = [(p.name, max(p.size, p.max_size)) for p in cfg.pools.values()]
    users = init_auth(auth_dir, nodes, pools)
    workers = len(users) - 4
    print(f"auth: {auth_dir}/auth.conf with {len(users)} users: client, worker, node, operator "
          f"and {workers} worker slot(s) of {', '.join(nodes)}")
    print(f"seeds: {auth_dir}/<role>.nk and {auth_dir}/workers/<node>.<pool>.<n>.nk (mode 0600)")
    print("use: set [auth] enabled = true (embedded server), or `include` auth.conf in your nats-server config")
    return 0
