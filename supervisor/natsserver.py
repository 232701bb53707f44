"""The embedded nats-server as a child of the root supervisor."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from collections.abc import Callable

from broker import ServerAddress, ServerNotReadyError, ServerOptions, wait_ready
from supervisor.children import ExitInfo, ProcessChild, exec_command


class NatsServerChild(ProcessChild):
    """Runs ``nats-server`` via the fork server; ready when ``/healthz`` is OK.

    Ports given as ``-1`` are chosen by the server at its first start and then
    kept, so clients reconnect to the same address after a restart.

    Its clients on the node (node services, workers) are its later siblings
    under ``rest_for_one``: they stop before it, and restart after it.
    """

    def __init__(
        self,
        opts: ServerOptions,
        *,
        shutdown: float = 10.0,
        on_exit: Callable[[ProcessChild, int, ExitInfo], None] | None = None,
    ) -> None:
        self.opts = opts
        self.address: ServerAddress | None = None
        super().__init__(
            "nats-server",
            exec_command,
            self._args,
            shutdown=shutdown,
            start_timeout=30.0,
            probe=self._probe,
            on_exit=on_exit,
        )

    def _args(self) -> tuple[list[str], str]:
        self.opts.prepare()
        # Where this start's lines begin in each log: its reason to fail is
        # among them, not in what earlier runs wrote.
        self._logs = {path: _size(path) for path in (self.opts.log_file, self._stderr_file)}
        return (self.opts.argv(), str(self._stderr_file))

    @property
    def _stderr_file(self) -> Path:
        return self.opts.store_dir / "nats-server.stderr"

    def _probe(self, pid: int, alive: Callable[[], bool]) -> None:
        try:
            self.address = wait_ready(self.opts, pid, timeout=25.0, alive=alive)
        except ServerNotReadyError as exc:
            reason = self._own_reason()
            if reason:
                raise ServerNotReadyError(f"{reason} (log: {self.opts.log_file})") from exc
            raise
        port = int(self.address.url.rsplit(":", 1)[1])
        monitor_port = int(self.address.monitor_url.rsplit(":", 1)[1])
        self.opts = dataclasses.replace(self.opts, port=port, monitor_port=monitor_port)

    def _own_reason(self) -> str:
        """The server's own words on why it stopped: its fatal or error lines of this start."""
        lines: list[str] = []
        for path, offset in getattr(self, "_logs", {}).items():
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    lines += f.read(65536).decode(errors="replace").splitlines()
            except OSError:
                continue
        errors = [_FATAL.sub("", line).strip() for line in lines if _FATAL.search(line)]
        return "; ".join(dict.fromkeys(errors))  # once each, in order


_FATAL = re.compile(r"^.*?\[(?:FTL|ERR)\]\s*")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
