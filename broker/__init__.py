"""Everything that talks to NATS.

* :mod:`broker.subjects` — subject, stream, bucket and header names (pure).
* :mod:`broker.codec` — the orjson body codec with a size limit.
* :mod:`broker.envelope` — the result body and dead-letter headers.
* :mod:`broker.server` — the embedded ``nats-server``.
* :mod:`broker.cluster` — a local cluster of ``nats-server``s (tests, chaos, ``foundation cluster up``).
* :mod:`broker.connection` — connecting with reconnect.
* :mod:`broker.identity` — credentials and TLS of a connection, per role.
* :mod:`broker.permissions` — each role's subject permissions (pure data).
* :mod:`broker.authconf` — ``foundation auth init``: role seeds and ``auth.conf``.
* :mod:`broker.tasks` — publishing tasks and collecting results.
* :mod:`broker.streams` — idempotent stream, consumer and bucket declarations.
* :mod:`broker.monitor` — polling a server's monitoring endpoint (/varz, /jsz).
"""

from broker import monitor, subjects
from broker.codec import (
    BodyTooLargeError,
    CodecError,
    InvalidJSONError,
    decode,
    encode,
    one_line,
)
from broker.cluster import ClusterError, LocalCluster
from broker.connection import TRANSIENT_ERRORS, NatsUnavailableError, connect, jetstream
from broker.authconf import AuthInitError, init_auth, worker_agents
from broker.envelope import dead_letter_headers, error_line, result_body
from broker.identity import (
    NKEY_ENV,
    PASSWORD_ENV,
    ROLES,
    Identity,
    IdentityError,
    identity_for,
    identity_from_config,
    role_identity,
    worker_identity,
)
from broker.server import (
    EmbeddedServer,
    ServerAddress,
    ServerNotReadyError,
    ServerOptions,
    die_with_parent,
    server_binary,
    wait_ready,
)
from broker.streams import (
    consumer_config,
    declare_pool_consumer,
    declare_streams,
    key_value,
    stream_configs,
)
from broker.tasks import (
    ResultCollector,
    collect_results,
    publish_task,
    read_stream,
    task_id_of,
)

__all__ = [
    "AuthInitError", "Identity", "IdentityError", "NKEY_ENV", "PASSWORD_ENV", "ROLES", "identity_for",
    "identity_from_config", "init_auth", "role_identity", "worker_agents", "worker_identity",
    "BodyTooLargeError", "ClusterError", "CodecError", "LocalCluster", "EmbeddedServer", "InvalidJSONError", "NatsUnavailableError",
    "ServerAddress", "TRANSIENT_ERRORS", "ServerNotReadyError", "ServerOptions", "connect", "consumer_config", "decode",
    "dead_letter_headers", "declare_pool_consumer", "declare_streams", "error_line", "result_body", "die_with_parent", "encode", "jetstream", "key_value",
    "one_line", "publish_task", "read_stream", "ResultCollector", "collect_results", "task_id_of", "server_binary", "stream_configs", "subjects", "wait_ready", "monitor",
]
