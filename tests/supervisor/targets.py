"""Child processes for the supervision-tree tests, forked from the fork server.

Each target logs what happens to it as lines in a shared file (O_APPEND, so
lines from many processes never interleave) and is driven by signals:

* SIGUSR1: exit 1 (an abnormal exit);
* SIGUSR2: exit 0 (a normal exit);
* SIGHUP: exit 100 (``EXIT_RECYCLE``: asks to be replaced);
* SIGTERM: log ``stop <id>`` and exit 0, unless told to ignore it;
* SIGKILL: dies by a signal.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from broker import die_with_parent


def log_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_log(path: Path) -> list[str]:
    """The lines logged so far (none if the file does not exist yet)."""
    return path.read_text().splitlines() if path.exists() else []


def sleeper(log: str, child_id: str, ignore_term: bool, channel: Any) -> None:
    """Log ``start <id> <pid>``, say ready, then wait for a signal."""
    os.setpgid(0, 0)
    die_with_parent()

    def on_term(_sig: int, _frame: Any) -> None:
        log_line(log, f"stop {child_id}")
        os._exit(0)

    signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore_term else on_term)
    signal.signal(signal.SIGUSR1, lambda *_: os._exit(1))
    signal.signal(signal.SIGUSR2, lambda *_: os._exit(0))
    signal.signal(signal.SIGHUP, lambda *_: os._exit(100))
    log_line(log, f"start {child_id} {os.getpid()}")
    channel.send_bytes(b"ready")
    channel.close()
    while True:
        signal.pause()


def with_grandchild(log: str, channel: Any) -> None:
    """Ignore SIGTERM and fork a grandchild that ignores it too.

    The grandchild does not ask for a death signal, so only a SIGKILL of the
    whole process group takes it down with its parent.
    """
    os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pid = os.fork()
    if pid == 0:
        while True:
            signal.pause()
    log_line(log, f"grandchild {pid}")
    channel.send_bytes(b"ready")
    channel.close()
    while True:
        signal.pause()


def fail_start(log: str, child_id: str, channel: Any) -> None:
    """Report an error on the channel instead of ready, then exit 1."""
    log_line(log, f"start {child_id} {os.getpid()}")
    channel.send_bytes(b"error:cannot start on purpose")
    channel.close()
    os._exit(1)
