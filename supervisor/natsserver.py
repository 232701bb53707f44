"""The embedded nats-server as a child of the root supervisor."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from broker import ServerAddress, ServerOptions, wait_ready
from supervisor.children import ExitInfo, ProcessChild, exec_command


class NatsServerChild(ProcessChild):
    """Runs ``nats-server`` via the fork server; ready when ``/healthz`` is OK.

    Ports given as ``-1`` are chosen by the server at its first start and then
    kept, so clients reconnect to the same address after a restart.

    ``before_stop`` is awaited before the server is asked to stop: the node
    closes its own connection there, rather than leave it reconnecting to a
    server that is going away on purpose.
    """

    def __init__(
        self,
        opts: ServerOptions,
        *,
        shutdown: float = 10.0,
        on_exit: Callable[[ProcessChild, int, ExitInfo], None] | None = None,
        before_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.opts = opts
        self.address: ServerAddress | None = None
        self.before_stop = before_stop
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

    async def stop(self, reason: str = "stopped") -> ExitInfo:
        # Clients of this node close first: a client left connected would
        # only start reconnecting to a server that is going away on purpose.
        if self.before_stop is not None and self.running:
            await self.before_stop()
        return await super().stop(reason)
