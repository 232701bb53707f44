"""Connecting to NATS, with the reconnect behaviour every process shares."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from config.errors import BrokerError

log = logging.getLogger("foundation.broker")

Connection = Client
"""A NATS connection, as :func:`connect` opens it (what the layers above pass around)."""

JetStream = JetStreamContext
"""A connection's JetStream context, as :func:`jetstream` makes it."""


class NatsUnavailableError(BrokerError):
    """NATS could not be reached."""


class BrokerUnavailableError(BrokerError):
    """A NATS call failed in a way that may succeed once NATS is back (timeout,
    reconnecting, no stream answered): retry it."""


class BrokerClosedError(BrokerError):
    """The NATS connection is closed for good: nothing more can be sent."""


def translated(exc: BaseException, doing: str) -> BrokerError:
    """The :class:`BrokerError` for a nats-py error met while ``doing`` something."""
    if isinstance(exc, BrokerError):
        return exc
    what = f"{doing}: {type(exc).__name__}" + (f": {exc}" if str(exc) else "")
    if isinstance(exc, (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError)):
        return BrokerClosedError(what)
    from broker.retry import is_transient  # it builds on this module

    if is_transient(exc):
        return BrokerUnavailableError(what)
    return BrokerError(what)


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,  # 503: no leader for the stream just now (a cluster electing one)
    asyncio.TimeoutError,
    BrokerUnavailableError,
)
"""Errors after which a NATS call may succeed if retried once NATS is back."""

NATS_ERRORS: tuple[type[BaseException], ...] = (nats.errors.Error,)
"""Every error a nats-py call raises: what a layer above catches around code
that still calls nats-py itself (the protocols) rather than through ``broker``."""


async def connect(
    url: str,
    *,
    name: str,
    connect_timeout: float = 5.0,
    reconnect: bool = True,
    **options: Any,
) -> Connection:
    """Open a NATS connection that reconnects forever.

    A process that loses NATS keeps running and keeps its in-flight state:
    publishes made while disconnected are buffered by the client up to its
    pending limit, then fail with an error the caller handles.

    Args:
        url: ``nats://host:port``, comma-separated for a cluster: tried in
            that order, and on a loss the client moves to the next one (or
            to a server the cluster told it about).
        name: connection name, shown by the server's monitoring.
        connect_timeout: seconds for the first connection.
        reconnect: keep reconnecting after a loss.

    Raises:
        NatsUnavailableError: the first connection failed.
    """

    also_on_error = options.pop("error_cb", None)
    refused: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()

    async def _error(exc: Exception) -> None:
        # A permissions violation is a refused action (a missing permission, or
        # a process doing what its role may not): worth seeing, never silent.
        text = str(exc).lower()
        level = logging.WARNING if "permissions violation" in text else logging.DEBUG
        log.log(level, "nats %s: %s", name, exc)
        if (isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in text) and not refused.done():
            refused.set_result(exc)
        if also_on_error is not None:
            await also_on_error(exc)

    client: list[Client] = []  # set once connected

    async def _disconnected() -> None:
        # A close of our own (a worker or node stopping) is no news: only a
        # lost connection is worth a line, or a node stopping N workers
        # would log N of them.
        if client and client[0].is_closed:
            log.debug("nats %s: closed", name)
            return
        log.info("nats %s: disconnected from %s", name, url)

    async def _reconnected() -> None:
        log.info("nats %s: reconnected", name)

    opts: dict[str, Any] = dict(
        servers=[u.strip() for u in url.split(",") if u.strip()],
        # In the order given: each host lists its own server first and moves
        # to the next only when that one is gone.
        dont_randomize=True,
        name=name,
        connect_timeout=connect_timeout,
        allow_reconnect=reconnect,
        max_reconnect_attempts=-1 if reconnect else 0,
        reconnect_time_wait=0.25,
        ping_interval=10,
        max_outstanding_pings=3,
        error_cb=_error,
        disconnected_cb=_disconnected,
        reconnected_cb=_reconnected,
    )
    opts.update(options)
    # With unlimited reconnects the client would also retry its *first*
    # connection forever; bound that one by ``connect_timeout``, and end it at
    # once when the server refuses the credentials (retrying cannot help).
    connecting = asyncio.ensure_future(nats.connect(**opts))
    done, _ = await asyncio.wait({connecting, refused}, timeout=connect_timeout, return_when=asyncio.FIRST_COMPLETED)
    if connecting in done:
        try:
            nc = connecting.result()
        except Exception as exc:  # nats.connect raises assorted OSError/NATS errors
            if refused.done():
                exc = refused.result()
            raise NatsUnavailableError(f"cannot connect to NATS at {url}: {exc}; is the server running?") from exc
        client.append(nc)
        return nc
    connecting.cancel()
    with contextlib.suppress(BaseException):
        await connecting
    if refused.done():
        raise NatsUnavailableError(
            f"NATS at {url} refused this identity ({refused.result()}): check nats.creds / nats.nkey_seed_file / "
            "nats.user and its password, or [auth] and the seeds of `foundation auth init`"
        )
    raise NatsUnavailableError(f"cannot connect to NATS at {url} within {connect_timeout:g}s; is the server running?")


def jetstream(nc: Connection, timeout: float = 5.0) -> JetStream:
    """The JetStream context, with a timeout for API calls and publish acks."""
    return nc.jetstream(timeout=timeout)
