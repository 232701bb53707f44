"""The embedded nats-server as a child of the root supervisor."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from broker import ServerAddress, ServerOptions, wait_ready
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
        return (self.opts.argv(), str(self.opts.store_dir / "nats-server.stderr"))

    def _probe(self, pid: int, alive: Callable[[], bool]) -> None:
        self.address = wait_ready(self.opts, pid, timeout=25.0, alive=alive)
        port = int(self.address.url.rsplit(":", 1)[1])
        monitor_port = int(self.address.monitor_url.rsplit(":", 1)[1])
        self.opts = dataclasses.replace(self.opts, port=port, monitor_port=monitor_port)
