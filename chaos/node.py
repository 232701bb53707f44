"""A throwaway node for a chaos run: ``foundation up`` in a child process.

It gets its own directory (config, embedded NATS store, metrics files), an
embedded nats-server on free ports, and one pool. The run talks to it like
any client would: NATS for tasks and results, the control service for pids.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from config.errors import FoundationError

FOUNDATION = str(Path(sys.executable).parent / "foundation")


class NodeFailedError(FoundationError):
    """The chaos node did not start, or exited during the run."""


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def node_config(directory: Path, pool: str, pool_table: dict[str, Any], *, node: str = "chaos") -> Path:
    """Write a config for a node with an embedded NATS server and one pool."""
    lines = [
        f'[node]\nname = "{node}"\n',
        f'[nats]\nurl = ""\nstore_dir = "{directory / "nats"}"\nport = -1\nmonitor_port = -1\n',
        f'[metrics]\nport = 0\ndir = "{directory / "metrics"}"\n',
        "[supervisor]\nmax_restarts = 1000\nmax_seconds = 10\n",
        f"[pools.{pool}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in pool_table.items()),
    ]
    path = directory / "foundation.toml"
    path.write_text("\n".join(lines))
    return path


class ChaosNode:
    """``foundation up`` for one run; a context manager that cleans up after itself.

    Args:
        pool: the pool name.
        pool_table: the pool's keys (``handler`` required).
        directory: where to keep its files (default: a temporary directory,
            removed afterwards).
    """

    def __init__(self, pool: str, pool_table: dict[str, Any], *, directory: Path | None = None, node: str = "chaos") -> None:
        self.pool = pool
        self.name = node
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="foundation-chaos-"))
        self.config = node_config(self.directory, pool, dict(pool_table), node=node)
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()

    def start(self, timeout: float = 60.0) -> "ChaosNode":
        """Start the node; returns once all its pools are up."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(
            [FOUNDATION, "up", "--config", str(self.config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=self.directory,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self.wait_line("nats: ", timeout).split()[1]
        self.wait_line(" up: pools", timeout)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self._lines.put(line)
        self._lines.put("")

    def wait_line(self, contains: str, timeout: float = 60.0) -> str:
        """Block until an output line contains ``contains``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise NodeFailedError(f"no line with {contains!r} from the node in {timeout:g}s; see {self.directory}") from None
            if contains in line:
                return line
            if line == "":
                raise NodeFailedError(f"the node exited ({self.proc.wait() if self.proc else '?'}) before {contains!r}:\n" + "".join(self.output[-30:]))

    def nats_server_pid(self) -> int:
        """Pid of the node's embedded nats-server (a descendant of the node process)."""
        import psutil

        assert self.proc is not None
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if child.name() == "nats-server":
                    return child.pid
            except psutil.NoSuchProcess:
                continue
        raise NodeFailedError("the node runs no embedded nats-server")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not stop."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()

    def __enter__(self) -> "ChaosNode":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)
