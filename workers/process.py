"""The body of a worker process, from fork to exit.

The supervisor forks this from its fork server and passes a :class:`WorkerSpec`
and the write end of a pipe. The worker reports on the pipe exactly once:
``ready`` when it is bound to its consumer, or ``error:<why>`` before it exits
non-zero, so the supervisor's ``start()`` returns only for a working worker
and can print why one could not start.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

from broker import Identity, IdentityError, NatsUnavailableError, connect, die_with_parent
from config.schema import PoolConfig
from workers.consumer import STOPPED, Worker
from workers.exitcodes import EXIT_ERROR, EXIT_HANDLER_IMPORT, EXIT_NATS_UNAVAILABLE, EXIT_OK, EXIT_RECYCLE
from workers.handler import Handler, HandlerImportError
from workers.statestore import StateConflictError

READY = b"ready"
ERROR_PREFIX = b"error:"


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs; pickled across the fork server."""

    pool: PoolConfig
    worker_id: str
    nats_url: str
    node: str
    connect_timeout: float = 5.0
    log_level: int = logging.INFO
    registry_ttl: float = 10.0  # node.registry_ttl: how long the agent's entry outlives its heartbeats
    identity: Identity = Identity()  # the agent's own identity when [auth] is enabled


def _report(channel: Any, message: bytes) -> None:
    try:
        channel.send_bytes(message)
        channel.close()
    except OSError:
        pass  # the supervisor is gone; the death signal will follow


def worker_main(spec: WorkerSpec, channel: Any) -> NoReturn:
    """Entry point of a forked worker. Never returns: exits with a named code."""
    os.setpgid(0, 0)  # own process group: the supervisor signals the whole group
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    logging.basicConfig(
        level=spec.log_level,
        format=f"%(asctime)s %(levelname)s [{spec.worker_id} pid {os.getpid()}] %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    faulthandler.enable()  # a segfaulting handler leaves its traceback in the log
    try:
        handler = Handler.load(spec.pool.handler, threads=spec.pool.concurrency)
    except HandlerImportError as exc:
        _report(channel, ERROR_PREFIX + str(exc).encode())
        os._exit(EXIT_HANDLER_IMPORT)
    try:
        code = asyncio.run(_serve(spec, handler, channel))
    except Exception:
        logging.getLogger("foundation.worker").exception("%s crashed", spec.worker_id)
        code = EXIT_ERROR
    handler.close()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _serve(spec: WorkerSpec, handler: Handler, channel: Any) -> int:
    # Imported here: prometheus_client must see PROMETHEUS_MULTIPROC_DIR, which
    # the supervisor sets before starting the fork server.
    from workers.agent import AgentStartError, WorkerAgent
    from workers.market import market_step
    from workers.metrics import MetricsMiddleware

    try:
        nc = await connect(spec.nats_url, name=f"worker {spec.worker_id}", connect_timeout=spec.connect_timeout,
                           **spec.identity.connect_options())
    except (NatsUnavailableError, IdentityError) as exc:
        _report(channel, ERROR_PREFIX + str(exc).encode())
        return EXIT_NATS_UNAVAILABLE
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    log = logging.getLogger("foundation.worker")
    agent = WorkerAgent(nc, spec.pool, spec.worker_id, spec.node, handler, registry_ttl=spec.registry_ttl)
    metrics = MetricsMiddleware()
    try:
        step = market_step(agent) if spec.pool.dispatch == "market" else None  # workers.market
        worker = Worker(spec.pool, spec.worker_id, nc, handler, node=spec.node, middleware=[metrics],
                        gate=agent.gate, variables=agent.variables, step=step)
        await worker.bind()
        await agent.start(worker, stop)  # registry entry, variables, voters: before "ready"
        _report(channel, READY)
        reason = await worker.run(stop)
    except StateConflictError as exc:
        log.error("%s: %s", spec.worker_id, exc)
        return EXIT_ERROR
    except AgentStartError as exc:
        _report(channel, ERROR_PREFIX + str(exc).encode())
        return EXIT_ERROR
    finally:
        metrics.flush()
        await agent.stop()  # unregisters on the way out
        await _close(nc)
    if reason != STOPPED:
        log.info("%s: recycling (%s) after %d task(s)", spec.worker_id, reason, worker.recycle.taken)
        return EXIT_RECYCLE
    return EXIT_OK


async def _close(nc: Any) -> None:
    # Flush so the last acks reach the server, then close. (``drain()`` would
    # wait out the pull subscription's pending request first.)
    if nc.is_connected:
        try:
            await nc.flush(timeout=2)
        except Exception as exc:  # the acks of unflushed tasks will be redelivered
            logging.getLogger("foundation.worker").warning("flush before exit failed: %s", exc)
    await nc.close()
