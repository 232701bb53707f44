"""Everything that talks to NATS.

* :mod:`broker.subjects` — subject, stream, bucket and header names (pure).
* :mod:`broker.codec` — the orjson body codec with a size limit.
* :mod:`broker.server` — the embedded ``nats-server``.
* :mod:`broker.connection` — connecting with reconnect.
* :mod:`broker.streams` — idempotent stream, consumer and bucket declarations.
"""

from broker import subjects
from broker.codec import BodyTooLargeError, CodecError, InvalidJSONError, decode, encode, one_line
from broker.connection import NatsUnavailableError, connect, jetstream
from broker.server import (
    EmbeddedServer,
    ServerAddress,
    ServerNotReadyError,
    ServerOptions,
    die_with_parent,
    server_binary,
    wait_ready,
)
from broker.streams import consumer_config, declare_pool_consumer, declare_streams, key_value, stream_configs

__all__ = [
    "BodyTooLargeError", "CodecError", "EmbeddedServer", "InvalidJSONError", "NatsUnavailableError",
    "ServerAddress", "ServerNotReadyError", "ServerOptions", "connect", "consumer_config", "decode",
    "declare_pool_consumer", "declare_streams", "die_with_parent", "encode", "jetstream", "key_value",
    "one_line", "server_binary", "stream_configs", "subjects", "wait_ready",
]
