"""One node per store: ``nats.store_dir`` is locked by the node that uses it.

Two embedded nats-servers on one JetStream store would both rebuild and
write its stream state. ``foundation up`` therefore takes an exclusive
``flock`` on ``<store_dir>/foundation.lock`` before anything starts, and
writes who holds it (node, pid, host, since) into the file. A second node on
the same store finds the lock taken and stops with exit code 2, naming the
holder. The kernel drops the lock when the holder exits, however it exits
(``kill -9`` included), so a stale lock file never blocks a restart. The
descriptor is not inherited by the node's children (they are exec'd), so
only the node itself holds the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from config.errors import SupervisorError

LOCK_FILE = "foundation.lock"


class StoreLockedError(SupervisorError):
    """Another live node holds the store directory."""


def lock_store(store_dir: Path, node: str) -> int:
    """Lock ``store_dir`` for this process; returns the descriptor to keep open.

    Raises:
        StoreLockedError: another process holds it (the message names it).
    """
    store_dir.mkdir(parents=True, exist_ok=True)
    path = store_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise StoreLockedError(
            f"nats.store_dir {store_dir} is in use by {holder}; stop that node first, "
            "or give this one its own nats.store_dir (or nats.url for an external server)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"node": node, "pid": os.getpid(), "host": socket.gethostname(),
                              "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode(), 0)
    return fd


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"node {info['node']!r} (pid {info['pid']} on {info['host']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not said who yet)"
