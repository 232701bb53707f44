"""``foundation auth init``: an nkey identity per role and the server's ``auth.conf``.

Layout of the directory (default ``var/auth``)::

    client.nk  worker.nk  node.nk  operator.nk      seeds, mode 0600
    client.pub worker.pub node.pub operator.pub     their public keys
    workers/<node>.<pool>.<n>.nk                    one per worker slot, mode 0600
    auth.conf                                       authorization { users = [...] }

``worker.nk`` is the role's template identity for tools (it may read the
buckets and answer conversations, never write an agent's key); each worker
process connects as its slot's identity, which alone may write that agent's
``registry`` and ``agent_state`` keys. Running ``init`` again keeps every
existing seed (a cluster's servers keep trusting its processes) and adds
the slots a grown pool or a new node needs, then rewrites ``auth.conf``.

``auth.conf`` is a complete ``authorization`` block: the embedded server
loads it directly, an external server ``include``\\ s it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import nkeys

from broker import permissions
from broker.identity import ROLES, role_seed_file, worker_seed_file
from broker.permissions import Permissions
from config.errors import BrokerError


class AuthInitError(BrokerError):
    """The auth directory could not be written or holds a bad seed."""


@dataclass(frozen=True)
class User:
    name: str  # role, or the agent of a worker slot
    public_key: str
    permissions: Permissions


def _seed(path: Path) -> str:
    """The public key of the seed in ``path``, creating the seed (0600) if absent."""
    if path.exists():
        try:
            return nkeys.from_seed(bytearray(path.read_bytes().strip())).public_key.decode()
        except (nkeys.NkeysError, ValueError) as exc:
            raise AuthInitError(f"{path} does not hold an nkey seed ({exc}); remove it to generate a new one") from exc
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(seed + b"\n")
    return nkeys.from_seed(bytearray(seed)).public_key.decode()


def worker_agents(nodes: Iterable[str], pools: Iterable[tuple[str, int]]) -> list[tuple[str, str]]:
    """``(agent, pool)`` of every worker slot: ``<node>.<pool>.<n>`` for n below the pool's largest size."""
    return [(f"{node}.{pool}.{n}", pool) for node in nodes for pool, most in pools for n in range(most)]


def init_auth(auth_dir: str | Path, nodes: Iterable[str], pools: Iterable[tuple[str, int]]) -> list[User]:
    """Write (or complete) the auth directory; the users of ``auth.conf``.

    Args:
        auth_dir: the directory.
        nodes: node names whose workers get identities.
        pools: ``(pool, largest size)`` pairs.

    Raises:
        AuthInitError: a file could not be written or an existing seed is bad.
    """
    root = Path(auth_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        keys = {role: _seed(role_seed_file(root, role)) for role in ROLES}
        for role, key in keys.items():  # public keys, e.g. for checking the operator's signature
            (root / f"{role}.pub").write_text(key + "\n")
        (root / "workers").mkdir(mode=0o700, exist_ok=True)
        users = [
            User("client", keys["client"], permissions.client(keys["client"])),
            User("worker", keys["worker"], permissions.worker_template(keys["worker"])),
            User("node", keys["node"], permissions.node()),
            User("operator", keys["operator"], permissions.operator(keys["operator"])),
        ]
        for agent, pool in worker_agents(nodes, pools):
            key = _seed(worker_seed_file(root, agent))
            users.append(User(agent, key, permissions.worker(key, agent, pool)))
        conf = root / "auth.conf"
        tmp = conf.with_suffix(".tmp")
        tmp.write_text(render(users))
        os.chmod(tmp, 0o600)
        tmp.replace(conf)
    except OSError as exc:
        raise AuthInitError(f"cannot write {root}: {exc.strerror or exc}") from exc
    return users


def _list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{s}"' for s in items) + "]"


def _render_permissions(p: Permissions) -> str:
    pub = f"allow: {_list(p.publish)}" + (f", deny: {_list(p.deny_publish)}" if p.deny_publish else "")
    sub = f"allow: {_list(p.subscribe)}" + (f", deny: {_list(p.deny_subscribe)}" if p.deny_subscribe else "")
    responses = "\n      allow_responses: true" if p.allow_responses else ""
    return f"{{\n      publish: {{ {pub} }}\n      subscribe: {{ {sub} }}{responses}\n    }}"


def render(users: list[User]) -> str:
    """``auth.conf``: one ``authorization`` block with an nkey user per identity."""
    lines = [
        "# Written by `foundation auth init`; include it in a nats-server config.",
        "# Roles and permissions: DESIGN.md section 10 and broker/permissions.py.",
        "authorization {",
        "  users = [",
    ]
    for user in users:
        lines.append(f"    # {user.name}")
        lines.append(f'    {{ nkey: "{user.public_key}", permissions: {_render_permissions(user.permissions)} }}')
    lines += ["  ]", "}", ""]
    return "\n".join(lines)
