"""``foundation auth init``: identities per role and the server's ``auth.conf`` (DESIGN.md §10).

``init`` and ``sign-keys`` print what they wrote; with ``--json`` as one JSON document.
"""

from __future__ import annotations

import argparse
from typing import Any

from pathlib import Path

import orjson

from broker import init_auth
from config.errors import FoundationError
from supervisor.cli.common import add_config_option, load
from supervisor.cli.output import add_json_option, emit


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
    add_json_option(init)
    init.set_defaults(func=run_init)
    sign = actions.add_parser(
        "sign-keys",
        help="sign a Byzantine key file (keys.json) with the operator's seed, so members can trust its keys",
    )
    add_config_option(sign)
    sign.add_argument("keys", metavar="KEYS.json", help="{id: key} or {keys: {id: key}, groups: {group: [id, ...]}}")
    sign.add_argument("--dir", help="auth directory holding operator.nk (default: [auth] dir of the config)")
    sign.add_argument("--out", help="where to write the signed file (default: KEYS.signed.json)")
    add_json_option(sign)
    sign.set_defaults(func=run_sign)


def run_init(args: argparse.Namespace) -> int:
    cfg = load(args)
    auth_dir = args.dir or cfg.auth.dir
    nodes = args.node or [cfg.node.name]
    pools = [(p.name, max(p.size, p.max_size)) for p in cfg.pools.values()]
    users = init_auth(auth_dir, nodes, pools)
    reply = {"dir": str(auth_dir), "conf": f"{auth_dir}/auth.conf", "users": len(users),
             "roles": ["client", "worker", "node", "operator"], "worker_slots": len(users) - 4, "nodes": nodes}
    emit(reply, args, lambda r: "\n".join([
        f"auth: {r['conf']} with {r['users']} users: client, worker, node, operator "
        f"and {r['worker_slots']} worker slot(s) of {', '.join(r['nodes'])}",
        f"seeds: {auth_dir}/<role>.nk and {auth_dir}/workers/<node>.<pool>.<n>.nk (mode 0600)",
        "use: set [auth] enabled = true (embedded server), or `include` auth.conf in your nats-server config",
    ]))
    return 0


def run_sign(args: argparse.Namespace) -> int:
    from protocols.bft import BftError, Signer, sign_key_file

    cfg = load(args)
    seed_file = Path(args.dir or cfg.auth.dir) / "operator.nk"
    source = Path(args.keys)
    out = Path(args.out) if args.out else source.with_suffix(".signed.json")
    try:
        signer = Signer("operator", seed_file.read_bytes().strip())
        document = orjson.loads(source.read_bytes())
        if not isinstance(document, dict):
            raise FoundationError(f"{source} is not a JSON object")
        out.write_bytes(orjson.dumps(sign_key_file(document, signer), option=orjson.OPT_INDENT_2))
    except OSError as exc:
        raise FoundationError(f"cannot sign {source}: {exc.strerror} ({exc.filename})") from exc
    except (orjson.JSONDecodeError, BftError) as exc:
        raise FoundationError(f"cannot sign {source}: {exc}") from exc
    emit({"signed": str(out), "operator": signer.public_key}, args, lambda r: (
        f"signed: {r['signed']} (by operator {r['operator']}); members load it with "
        "protocols.bft.load_signed_key_directory(path, [operator public key])"))
    return 0
