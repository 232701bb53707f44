"""Run a node (``foundation up``) as a child process: for tests, chaos runs and benchmarks.

The one way this project starts a throwaway node. Usage::

    from supervisor.harness import start_node

    with start_node(tmp_path, pools={"echo": {"handler": "workers.examples:echo", "size": 2}}) as node:
        node.url            # NATS URL of the node (its embedded server, or the nats_url given)
        node.monitor_url    # the embedded server's monitoring URL ("" when external)
        node.metrics_url    # http://host:port/metrics ("" unless metrics={"port": -1} or a port)
        node.name, node.pid, node.alive, node.output (lines so far)
    # leaving the block: SIGTERM, wait, SIGKILL if it does not stop

Or step by step: :func:`write_config` writes a ``foundation.toml``;
``NodeProcess(config, env=...)`` spawns ``foundation up --config PATH`` (cwd:
the config's folder); ``wait_up()`` returns once the node is ready;
``stop()`` returns its exit code.

Readiness is machine-readable, never scraped from log lines: the harness
binds a unix datagram socket and passes it as ``$NOTIFY_SOCKET``, and the
node speaks systemd's notify protocol on it (:mod:`supervisor.systemd`). Its
``READY=1`` message — sent once every pool is up — also carries the node's
addresses as ``X_FOUNDATION_NODE``, ``X_FOUNDATION_NATS``,
``X_FOUNDATION_MONITOR`` and ``X_FOUNDATION_METRICS``. Every message is kept
(:meth:`NodeProcess.next_notification`), so tests can follow ``STATUS=``,
``WATCHDOG=1`` and ``STOPPING=1`` too.

Errors: :class:`NodeFailedError` when the node exits before it is ready, or
is not ready in time; its message carries the node's last output lines.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from config.errors import SupervisorError

REPO = Path(__file__).resolve().parent.parent
FOUNDATION = str(Path(sys.executable).parent / "foundation")

READY_FIELDS = {"X_FOUNDATION_NODE": "name", "X_FOUNDATION_NATS": "url",
                "X_FOUNDATION_MONITOR": "monitor_url", "X_FOUNDATION_METRICS": "metrics_url"}


class NodeFailedError(SupervisorError):
    """The node exited before it was ready, or was not ready in time."""


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _table(name: str, table: Mapping[str, Any]) -> str:
    """``[name]`` with its scalar keys, then its sub-tables (``quota``) as ``[name.key]``."""
    scalars = "".join(f"{k} = {_toml(v)}\n" for k, v in table.items() if not isinstance(v, Mapping))
    subs = [_table(f"{name}.{k}", v) for k, v in table.items() if isinstance(v, Mapping)]
    return "\n".join([f"[{name}]\n{scalars}", *subs])


def write_config(path: Path, *, pools: Mapping[str, Mapping[str, Any]], node: str = "test", nats_url: str = "",
                 **sections: Mapping[str, Any]) -> Path:
    """Write a ``foundation.toml`` for a throwaway node; returns ``path``.

    The node gets an embedded nats-server on free ports (unless ``nats_url``),
    its store and metrics files next to the config, and no ``/metrics``
    server (``metrics={"port": -1}`` serves it on a free port). ``pools`` are ``{name: {key: value}}`` (a dict value, like ``quota``,
    becomes a sub-table); ``sections`` add or override other tables
    (``supervisor={"max_restarts": 100}``, ``metrics={...}``).
    """
    path = Path(path)
    nats = {"url": nats_url, "store_dir": str(path.parent / "nats"), "port": -1, "monitor_port": -1,
            **sections.pop("nats", {})}
    metrics = {"port": 0, "dir": str(path.parent / "metrics"), **sections.pop("metrics", {})}
    node_table = {"name": node, **sections.pop("node", {})}
    tables = [_table("node", node_table), _table("nats", nats), _table("metrics", metrics)]
    tables += [_table(name, table) for name, table in sections.items()]
    tables += [_table(f"pools.{name}", table) for name, table in pools.items()]
    path.write_text("\n".join(tables))
    return path


class NodeProcess:
    """``foundation up --config PATH`` in a child process.

    Args:
        config: the config file; the node runs in its folder.
        *args: more arguments for ``foundation up``.
        env: variables added to this process's environment.
    """

    def __init__(self, config: Path, *args: str, env: Mapping[str, str] | None = None) -> None:
        self.config = Path(config)
        self.output: list[str] = []
        self.notifications: list[str] = []
        self.ready: dict[str, str] = {}
        self.name = self.url = self.monitor_url = self.metrics_url = ""
        self._lines: queue.Queue[str] = queue.Queue()
        self._messages: queue.Queue[str] = queue.Queue()
        self._changed = threading.Condition()
        self._eof = False
        self.owned_dir: Path | None = None  # removed once the node has stopped (start_node's temporary one)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        address = f"foundation-harness-{uuid.uuid4().hex}"
        self._sock.bind(b"\0" + address.encode())  # the abstract namespace: "@address"
        pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        full_env = {**os.environ, "PYTHONPATH": pythonpath, **(env or {}), "NOTIFY_SOCKET": f"@{address}"}
        self.proc = subprocess.Popen(
            [FOUNDATION, "up", "--config", str(self.config), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env, cwd=self.config.parent,
        )
        threading.Thread(target=self._read_output, name="node output", daemon=True).start()
        threading.Thread(target=self._read_notifications, name="node notify", daemon=True).start()

    # -- readers (threads) ---------------------------------------------------

    def _read_output(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self._lines.put(line)
        self._lines.put("")  # EOF marker
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def _read_notifications(self) -> None:
        # Always drained: a unix datagram queue is short (10), and a node
        # whose notifications nobody reads would see its sends dropped.
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            if not data:  # shut down by close()
                return
            message = data.decode(errors="replace")
            fields = dict(line.partition("=")[::2] for line in message.splitlines())
            with self._changed:
                self.notifications.append(message)
                if fields.get("READY") == "1" and not self.ready:
                    self.ready = fields
                    for key, attr in READY_FIELDS.items():
                        setattr(self, attr, fields.get(key, ""))
                self._changed.notify_all()
            self._messages.put(message)

    # -- waiting -------------------------------------------------------------

    def wait_up(self, timeout: float = 60.0) -> NodeProcess:
        """Block until the node sent ``READY=1`` (every pool up); returns self.

        Raises:
            NodeFailedError: it exited first, or was not ready within ``timeout``.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: self.ready or self._eof, timeout):
                raise NodeFailedError(f"node not ready within {timeout:g}s; output:\n{self.tail()}")
            if not self.ready:
                code = self.proc.wait()
                raise NodeFailedError(f"node exited with code {code} before it was ready; output:\n{self.tail()}")
        return self

    def wait_line(self, contains: str, timeout: float = 30.0) -> str:
        """Block until an output line (not seen by an earlier call) contains ``contains``; return it.

        Raises:
            NodeFailedError: no such line in time, or the node exited first.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise NodeFailedError(f"no line with {contains!r} within {timeout:g}s; output:\n{self.tail()}") from None
            if contains in line:
                return line
            if line == "":
                self._lines.put("")  # later calls see the end too
                raise NodeFailedError(f"node exited ({self.proc.wait()}) before {contains!r}; output:\n{self.tail()}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        """Wait for the node to exit on its own and for its last output line; the exit code.

        Raises:
            NodeFailedError: still running after ``timeout`` (it is killed).
        """
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise NodeFailedError(f"node still running after {timeout:g}s; output:\n{self.tail()}") from None
        with self._changed:
            self._changed.wait_for(lambda: self._eof, timeout)
        self._close()
        return code

    def next_notification(self, timeout: float = 30.0) -> str:
        """The next notify message not yet taken (``READY=1\\nSTATUS=…``, ``WATCHDOG=1`` …)."""
        try:
            return self._messages.get(timeout=timeout)
        except queue.Empty:
            raise NodeFailedError(f"no notification within {timeout:g}s; output:\n{self.tail()}") from None

    def tail(self, lines: int = 60) -> str:
        return "".join(self.output[-lines:])

    # -- the process ---------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def nats_server_pid(self) -> int:
        """Pid of the node's embedded nats-server.

        Raises:
            NodeFailedError: none runs now (external NATS, or between restarts).
        """
        import psutil

        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        for child in children:
            try:
                if child.name() == "nats-server":
                    return child.pid
            except psutil.NoSuchProcess:
                continue
        raise NodeFailedError("the node runs no embedded nats-server now")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` (once) and wait for the exit code and the last output line.

        Raises:
            NodeFailedError: it did not exit within ``timeout`` (it is killed).
        """
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
            with self._changed:  # and its last line read: output is complete once stop() returns
                self._changed.wait_for(lambda: self._eof, timeout)
            return code
        except subprocess.TimeoutExpired:
            self.kill()
            raise NodeFailedError(f"node did not stop within {timeout:g}s of signal {sig}; output:\n{self.tail(400)}") from None
        finally:
            self._close()

    def kill(self) -> None:
        """SIGKILL the node (its workers and nats-server die with it)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._close()

    def _close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader thread
        except OSError:
            pass
        self._sock.close()
        if self.owned_dir is not None and self.proc.poll() is not None:
            shutil.rmtree(self.owned_dir, ignore_errors=True)

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        except NodeFailedError:
            pass  # killed; the test's own failure (if any) is the interesting one


def start_node(directory: Path | None = None, *, pools: Mapping[str, Mapping[str, Any]], node: str = "test",
               nats_url: str = "", env: Mapping[str, str] | None = None, timeout: float = 60.0,
               **sections: Mapping[str, Any]) -> NodeProcess:
    """Write ``directory/foundation.toml``, start the node, wait until it is up.

    ``directory`` defaults to a fresh temporary one, removed when the node
    has stopped (use the result as a context manager then).

    Raises:
        NodeFailedError: the node did not come up (it is killed).
    """
    own = directory is None
    directory = Path(directory or tempfile.mkdtemp(prefix="foundation-node-"))
    directory.mkdir(parents=True, exist_ok=True)
    proc = NodeProcess(write_config(directory / "foundation.toml", pools=pools, node=node, nats_url=nats_url, **sections),
                       env=env)
    if own:
        proc.owned_dir = directory
    try:
        return proc.wait_up(timeout)
    except BaseException:
        proc.kill()
        raise

