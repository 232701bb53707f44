"""nats-py's errors, under the names the layers above catch them by.

Most of ``broker`` turns a nats error into a :class:`~config.errors.BrokerError`
(:func:`broker.translated`). The protocols still make some calls themselves
on a :class:`~broker.Connection` or a :class:`~broker.KeyValueBucket`
(requests, subscriptions, KV reads and compare-and-set writes) and tell the
outcomes apart by these classes: a key that has no value, a write that lost
its compare-and-set, a request nobody answered.
"""

from __future__ import annotations

import nats.errors
import nats.js.errors

NatsTimeoutError = nats.errors.TimeoutError
"""A request, flush or watcher update got no answer in time."""

NoRespondersError = nats.errors.NoRespondersError
"""A request found nobody listening on its subject."""

ConnectionClosedError = nats.errors.ConnectionClosedError
"""The connection is closed for good."""

BadSubscriptionError = nats.errors.BadSubscriptionError
"""The subscription is already gone (with its connection)."""

PayloadTooLargeError = nats.errors.MaxPayloadError
"""A message over the server's ``max_payload``."""

ReconnectingError = nats.errors.ConnectionReconnectingError
"""The connection is reconnecting just now."""

OutboundBufferFullError = nats.errors.OutboundBufferLimitError
"""Too much was published while disconnected."""

JetStreamError = nats.js.errors.Error
"""Any JetStream failure (the root of the classes below)."""

JetStreamAPIError = nats.js.errors.APIError
"""The JetStream API refused a call; ``err_code`` says why."""

NotFoundError = nats.js.errors.NotFoundError
"""The stream, consumer or message asked for does not exist."""

KeyNotFoundError = nats.js.errors.KeyNotFoundError
"""A KV key has no value (never written, deleted or purged)."""

KeyDeletedError = nats.js.errors.KeyDeletedError
"""A KV key's last entry is a delete."""

NoKeysError = nats.js.errors.NoKeysError
"""A KV bucket holds no keys."""

WrongRevisionError = nats.js.errors.KeyWrongLastSequenceError
"""A KV compare-and-set write found the key at another revision."""

TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (NatsTimeoutError, NoRespondersError, ConnectionClosedError)
"""A request that did not reach an answer: NATS away, nobody answering, the connection closed."""

__all__ = [
    "BadSubscriptionError", "ConnectionClosedError", "JetStreamAPIError", "JetStreamError", "KeyDeletedError",
    "KeyNotFoundError", "NatsTimeoutError", "NoKeysError", "NoRespondersError", "NotFoundError",
    "OutboundBufferFullError", "PayloadTooLargeError", "ReconnectingError", "TRANSPORT_ERRORS", "WrongRevisionError",
]
