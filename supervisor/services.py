"""The node's own services, as one child of the root supervisor.

::

    root (rest_for_one)
      ├─ nats-server       only when embedded
      ├─ node-services     this module: ready when start() returns
      └─ pool:…            need what node-services declared

:class:`NodeServices` owns, from ``start()`` to ``stop()``:

* the node's NATS connection (reconnecting forever);
* every stream and bucket (:func:`broker.declare_all`, with ``nats.replicas``),
  declared before any pool starts;
* the lifecycle events publisher's connection (:mod:`supervisor.events`);
* the control service ``foundation`` (:mod:`supervisor.control`) with the
  endpoints of :class:`~supervisor.endpoints.NodeControl` — so a node with no
  pools answers ``$SRV.PING`` and ``status`` too;
* the agents' node-side services: registry, its query endpoint, quota
  candidates, declared variables (:mod:`supervisor.agents`);
* the counter of protocol rounds run outside any node (the CLI's).

``start()`` returns once all of that is in place, or raises
:class:`~supervisor.children.ChildStartError` having closed what it opened.
``stop()`` closes them in reverse and always ends, within
:data:`~supervisor.agents.STOP_TIMEOUT` per part. ``wait()`` ends when the
connection closes without a ``stop()``: the supervisor then restarts this
child and, by ``rest_for_one``, the pools after it. Under ``rest_for_one`` a
restart of the embedded nats-server restarts this child as well, so it never
outlives the server it connected to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from broker import DeclarationError, Identity, connect, declare_all, jetstream
from config.errors import FoundationError
from config.schema import Config
from protocols.metrics import FORWARD_QUEUE, FORWARD_SUBJECT, count_forwarded
from supervisor.agents import STOP_TIMEOUT, NodeAgents
from supervisor.children import ChildStartError, ExitInfo
from supervisor.control import Handler, serve_control
from supervisor.events import EventPublisher

log = logging.getLogger("foundation.node.services")

Endpoints = Callable[[Any], dict[str, Handler]]  # the JetStream context -> control endpoints


async def _count_forwarded(msg: Any) -> None:
    count_forwarded(msg.data)


class NodeServices:
    """Connection, streams, control service and agents' services of one node.

    Args:
        cfg: the node's config.
        url: the NATS URL to connect to, read at each start (the embedded
            server's address is known only once it runs).
        events: the node's event publisher; attached to the connection while it is open.
        agents: the node's registry, quota candidates and variables.
        endpoints: builds the control endpoints for a JetStream context.
        identity: who the node is to NATS (:func:`broker.identity_for` ``(cfg, "node")``).
    """

    id = "node-services"
    restart = "permanent"

    def __init__(self, cfg: Config, *, url: Callable[[], str], events: EventPublisher, agents: NodeAgents,
                 endpoints: Endpoints, identity: Identity) -> None:
        self.cfg = cfg
        self.url = url
        self.events = events
        self.agents = agents
        self.endpoints = endpoints
        self.identity = identity
        self.shutdown = 2 * STOP_TIMEOUT  # the agents' services, then the events and the connection
        self.nc: Any = None
        self._exit: asyncio.Future[ExitInfo] | None = None
        self._work: set[asyncio.Task[None]] = set()  # long control requests under way

    @property
    def running(self) -> bool:
        return self._exit is not None and not self._exit.done()

    @property
    def js(self) -> Any:
        """The JetStream context of the open connection."""
        if self.nc is None:
            raise FoundationError("the node's services are not running")
        return jetstream(self.nc)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        exit_ = loop.create_future()

        async def closed() -> None:  # the client gave up, or we closed it
            if not exit_.done():
                exit_.set_result(ExitInfo(1, "the node's NATS connection closed"))

        try:
            self.nc = await connect(self.url(), name=f"supervisor {self.cfg.node.name}",
                                    connect_timeout=self.cfg.nats.connect_timeout, closed_cb=closed,
                                    **self.identity.connect_options())
            js = jetstream(self.nc)
            # Every stream and bucket, with nats.replicas, before anything uses
            # one (workers may not create any: broker.permissions).
            await declare_all(js, self.cfg.nats)
            await self.nc.subscribe(FORWARD_SUBJECT, queue=FORWARD_QUEUE, cb=_count_forwarded)
            service = await serve_control(self.nc, self.cfg.node.name, self.endpoints(js), self._spawn)
            await self.agents.start(self.nc, service)  # before any worker starts: they need what it declares
        except DeclarationError:  # the operator's call: `foundation up` exits 2 with it
            await self._close()
            raise
        except FoundationError as exc:
            await self._close()
            raise ChildStartError(self.id, str(exc)) from exc
        except BaseException:
            await self._close()
            raise
        self.events.attach(self.nc)
        self._exit = exit_

    async def wait(self) -> ExitInfo:
        if self._exit is None:
            raise FoundationError(f"{self.id} was never started")
        return await asyncio.shield(self._exit)

    async def stop(self, reason: str = "stopped") -> ExitInfo:
        if not self.running:
            return self._exit.result() if self._exit is not None else ExitInfo(0, reason, True)
        assert self._exit is not None
        self._exit.set_result(ExitInfo(0, reason, requested=True))  # before close(): not an unexpected exit
        await self._close()
        return self._exit.result()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name="control request")
        self._work.add(task)
        task.add_done_callback(self._work.discard)
        return task

    async def _close(self) -> None:
        """End control requests under way, stop the agents' services, publish the last events, close the connection."""
        for task in list(self._work):
            task.cancel()  # each answers "the node is stopping"
        if self._work:
            await asyncio.wait(set(self._work), timeout=STOP_TIMEOUT)
        await self.agents.stop()
        await self.events.flush()
        self.events.attach(None)
        nc, self.nc = self.nc, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), STOP_TIMEOUT)
            except Exception as exc:  # closing during shutdown; nothing left to do
                log.debug("closing the node's connection: %r", exc)
