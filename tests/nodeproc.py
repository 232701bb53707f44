"""Running ``foundation up`` as a real child process in tests."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FOUNDATION = str(Path(sys.executable).parent / "foundation")


def write_config(path: Path, *, nats_url: str = "", pools: dict[str, dict[str, Any]], node: str = "test", **sections: dict[str, Any]) -> Path:
    """Write a foundation.toml; pools are ``{name: {key: value}}``."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    nats = {"url": nats_url, "store_dir": str(path.parent / "nats"), "port": -1, "monitor_port": -1, **sections.pop("nats", {})}
    lines = [f'[node]\nname = "{node}"\n', "[nats]\n" + "".join(f"{k} = {value(v)}\n" for k, v in nats.items())]
    metrics = {"port": 0, "dir": str(path.parent / "metrics"), **sections.pop("metrics", {})}
    lines.append("[metrics]\n" + "".join(f"{k} = {value(v)}\n" for k, v in metrics.items()))
    for name, table in sections.items():
        lines.append(f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in table.items()))
    for name, table in pools.items():
        quota = table.pop("quota", None)
        lines.append(f"[pools.{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in table.items()))
        if quota:
            lines.append(f"[pools.{name}.quota]\n" + "".join(f"{k} = {value(v)}\n" for k, v in quota.items()))
    path.write_text("\n".join(lines))
    return path


class NodeProcess:
    """``foundation up --config PATH`` in a child process, with its output lines."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.proc = subprocess.Popen(
            [FOUNDATION, "up", "--config", str(config), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=full_env,
            cwd=config.parent,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put("")  # EOF marker

    def wait_line(self, contains: str, timeout: float = 30.0) -> str:
        """Block until an output line contains ``contains``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no line with {contains!r} in {timeout}s; output:\n{''.join(self.output)}") from None
            if contains in line:
                return line
            if line == "":
                raise AssertionError(f"node exited ({self.proc.wait()}) before {contains!r}; output:\n{''.join(self.output)}")

    def wait_up(self, timeout: float = 60.0) -> "NodeProcess":
        self.wait_line(" up: pools", timeout)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Signal the node and wait for its exit code.

        Raises:
            AssertionError: it did not exit in time (killed, output attached).
        """
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            tail = "".join(self.output[-400:])
            raise AssertionError(f"node did not stop within {timeout:g}s after signal {sig}; last output:\n{tail}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
