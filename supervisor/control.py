"""The per-node control service: NATS micro service ``foundation``.

Every node registers the service ``foundation`` (so ``$SRV.PING``,
``$SRV.INFO`` and ``$SRV.STATS`` find all nodes) with endpoints on
node-specific subjects, so the CLI's ``--node`` reaches exactly one node:

    foundation.control.<node>.status   {}                        -> status
    foundation.control.<node>.scale    {"pool": P, "size": N}    -> {"pool", "size", "removed"}
    foundation.control.<node>.restart  {"pool": P} | {"slot": S} -> {"restarted": [...]}
    foundation.control.<node>.drain    {"pool": P} | {}          -> {"drained": {...}}
    foundation.control.<node>.resume   {"pool": P} | {}          -> {"resumed": {...}}

What each endpoint does is in :mod:`supervisor.endpoints`.

Requests and replies are JSON. Errors use the micro error headers
(``Nats-Service-Error``, ``Nats-Service-Error-Code``) with a one-line reason:
400 a bad request, 404 an unknown pool or slot, 409 a conflict (the pool is
drained, or busy with another scale), 500 a failure.

A handler that takes long (scale, restart, drain) checks the request at once
— its errors are counted in ``$SRV.STATS`` — and returns :class:`Later`: the
work then runs in its own task, which sends the reply, so the endpoint (and
the node's other endpoints) keep answering meanwhile. A failure of that
work is answered with an error too but not counted in the stats.
"""

from __future__ import annotations

import logging
import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from broker import (
    Connection,
    NatsTimeoutError,
    NoRespondersError,
    ServiceError,
    ServiceRequest,
    decode,
    encode,
    reply_allowed,
    request_reply,
    start_service,
    subjects,
)
from config.errors import FoundationError

log = logging.getLogger("foundation.control")

VERSION = "0.1.0"

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]


class Later:
    """A handler's answer that the request is valid and its work will take a while.

    Args:
        work: computes the reply (raising :class:`ControlError` for an error reply).
    """

    def __init__(self, work: Coroutine[Any, Any, Any]) -> None:
        self.work = work


def control_subject(node: str, endpoint: str) -> str:
    """``foundation.control.<node>.<endpoint>``."""
    return f"foundation.control.{subjects.token(node, 'node name')}.{endpoint}"


class ControlError(FoundationError):
    """A control request was invalid (status 400) or failed (500)."""

    def __init__(self, message: str, code: int = 400) -> None:
        self.code = code
        super().__init__(message)


async def serve_control(nc: Connection, node: str, endpoints: dict[str, Handler], spawn: Spawn | None = None) -> Any:
    """Register the service and its endpoints; returns the micro service.

    ``spawn`` runs the work of :class:`Later` replies; the caller owns those
    tasks and cancels them when it stops (:class:`~supervisor.services.NodeServices`
    does). Without it they run as tasks of their own, kept until they end.
    """
    spawn = spawn or _spawn
    service = await start_service(
        nc,
        name=subjects.SERVICE_NAME,
        version=VERSION,
        description="Foundation node control",
        metadata={"node": node},
    )
    for name, fn in endpoints.items():
        await service.add_endpoint(
            name=name, subject=control_subject(node, name), handler=_wrap(fn, spawn), queue_group=f"node-{node}"
        )
    return service


_running: set[asyncio.Task[None]] = set()  # Later work of services that passed no spawn


def _spawn(work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    task = asyncio.get_running_loop().create_task(work, name="control request")
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


def _wrap(fn: Handler, spawn: Spawn) -> Callable[[ServiceRequest], Awaitable[None]]:
    # Errors leave as ServiceError so the micro framework both sends the error
    # headers and counts them in $SRV.STATS (num_errors, last_error).
    async def handle(req: ServiceRequest) -> None:
        # A control request without an inbox to answer is not acted on: a
        # reply reflected here by another service (say a $SRV.PING answer
        # addressed to this subject) must not drain a node.
        if not reply_allowed(request_reply(req), f"control request on {req.subject}"):
            return
        try:
            args = decode(req.data) if req.data else {}
            if not isinstance(args, dict):
                raise ControlError("request body must be a JSON object")
            reply = await fn(args)
        except Exception as exc:
            raise _service_error(exc) from exc
        if isinstance(reply, Later):
            spawn(_finish(req, reply.work))
            return
        await req.respond(encode(reply))

    return handle


async def _finish(req: ServiceRequest, work: Coroutine[Any, Any, Any]) -> None:
    try:
        reply = await work
    except asyncio.CancelledError:
        await _answer_error(req, ServiceError(code="503", description="the node is stopping"))
        raise
    except Exception as exc:
        await _answer_error(req, _service_error(exc))
        return
    try:
        await req.respond(encode(reply))
    except Exception as exc:  # the connection is closing; the caller times out
        log.debug("control reply not sent: %r", exc)


async def _answer_error(req: ServiceRequest, error: ServiceError) -> None:
    try:
        await req.respond_error(error.code, error.description)
    except Exception as exc:  # the connection is closing; the caller times out
        log.debug("control error reply not sent: %r", exc)


def _service_error(exc: Exception) -> ServiceError:
    if isinstance(exc, ControlError):
        return ServiceError(code=str(exc.code), description=str(exc))
    if isinstance(exc, FoundationError):
        return ServiceError(code="500", description=str(exc))
    log.error("control endpoint failed", exc_info=exc)  # report, never leave the caller hanging
    return ServiceError(code="500", description=f"{type(exc).__name__}: {exc}")


async def request(nc: Connection, node: str, endpoint: str, args: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
    """Call a node's control endpoint (the CLI's side).

    Raises:
        ControlError: the node answered with an error, or did not answer.
    """
    try:
        msg = await nc.request(control_subject(node, endpoint), encode(args or {}), timeout=timeout)
    except NoRespondersError:
        raise ControlError(f"no node {node!r} is running (nothing answers on {control_subject(node, endpoint)})", 503) from None
    except NatsTimeoutError:
        raise ControlError(f"node {node!r} did not answer {endpoint} within {timeout:g}s", 504) from None
    headers = msg.headers or {}
    if "Nats-Service-Error" in headers:
        raise ControlError(headers["Nats-Service-Error"], int(headers.get("Nats-Service-Error-Code", "500")))
    return decode(msg.data)
