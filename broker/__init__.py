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
* :mod:`broker.replies` — reply subjects taken from messages must be inboxes.
* :mod:`broker.tasks` — publishing tasks and collecting results.
* :mod:`broker.catalog` — every stream and KV bucket the project declares.
* :mod:`broker.streams` — idempotent declarations of those, and pool consumers.
* :mod:`broker.retry` — retrying calls through outages and leader elections.
* :mod:`broker.monitor` — polling a server's monitoring endpoint (/varz, /jsz).
* :mod:`broker.workqueue` — the pull consumer a worker takes tasks from, and settles them with.
* :mod:`broker.outcomes` — storing results and dead letters (pipelined PubAcks).
* :mod:`broker.bucket` — a KV bucket read and written by key (the attempt journal).
* :mod:`broker.casbucket` — a KV bucket with compare-and-set writes (agent states).
* :mod:`broker.exitlog` — the stream of worker exit events, replayed to explain a death.
* :mod:`broker.stored` — a stream's messages by sequence: read, delete, a consumer's progress.
* :mod:`broker.listener` — plain messages on a subject handed to a callback (advisories).
* :mod:`broker.natserrors` — nats-py's errors under the names the protocols catch them by.
* :mod:`broker.service` — NATS micro services: endpoints answering requests (the node's ``foundation``).
* :mod:`broker.watch` — a KV bucket's updates one by one, and a watch gone stale after a reconnect.
* :mod:`broker.expiring` — a KV bucket whose keys expire one by one, with delete markers (the registry).
"""

from broker import catalog, monitor, subjects
from broker.codec import (
    BodyTooLargeError,
    CodecError,
    InvalidJSONError,
    decode,
    encode,
    one_line,
)
from broker.cluster import ClusterError, LocalCluster
from broker.connection import (
    NATS_ERRORS,
    TRANSIENT_ERRORS,
    BrokerClosedError,
    BrokerUnavailableError,
    Connection,
    JetStream,
    NatsUnavailableError,
    connect,
    jetstream,
    translated,
)
from broker.authconf import AuthInitError, init_auth, worker_agents
from broker.replies import reply_allowed, request_reply
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
from broker.retry import ELECTION_POLL, is_transient, retrying
from broker.snapshot import current_values
from broker.retry import publish as publish_retrying
from broker.streams import (
    DeclarationError,
    KeyValueBucket,
    consumer_config,
    declare_all,
    declare_pool_consumer,
    declare_streams,
    key_value,
    set_lazy_replicas,
    stream_configs,
)
from broker.watch import KeyWatcher, StaleWatchError, bucket_connection, reconnects, watch_update
from broker.bucket import Bucket
from broker.expiring import latest_record, open_expiring_bucket, write_record
from broker.natserrors import (
    TRANSPORT_ERRORS,
    BadSubscriptionError,
    ConnectionClosedError,
    JetStreamAPIError,
    JetStreamError,
    KeyDeletedError,
    KeyNotFoundError,
    NatsTimeoutError,
    NoKeysError,
    NoRespondersError,
    NotFoundError,
    OutboundBufferFullError,
    PayloadTooLargeError,
    ReconnectingError,
    WrongRevisionError,
)
from broker.service import Endpoint, Service, ServiceError, ServiceRequest, start_service
from broker.casbucket import CasBucket, CasConflictError
from broker.exitlog import ExitLog
from broker.listener import Listener, Received
from broker.stored import ConsumerProgress, StoredMessage, consumer_progress, delete_message, get_message
from broker.outcomes import AckedPublisher, OutcomeStore
from broker.workqueue import Message, WorkQueue
from broker.tasks import (
    ResultCollector,
    collect_results,
    publish_task,
    read_stream,
    task_id_of,
)

__all__ = [
    "TRANSPORT_ERRORS", "BadSubscriptionError", "ConnectionClosedError", "JetStreamAPIError", "JetStreamError",
    "KeyDeletedError", "KeyNotFoundError", "NatsTimeoutError", "NoKeysError", "NoRespondersError", "NotFoundError",
    "OutboundBufferFullError", "PayloadTooLargeError", "ReconnectingError", "WrongRevisionError",
    "Endpoint", "Service", "ServiceError", "ServiceRequest", "start_service",
    "KeyValueBucket", "KeyWatcher", "bucket_connection", "latest_record", "open_expiring_bucket", "write_record",
    "current_values",
    "Bucket", "Connection", "ConsumerProgress", "ExitLog", "JetStream", "Listener", "NATS_ERRORS", "Received",
    "StoredMessage", "consumer_progress", "delete_message", "get_message",
    "reply_allowed", "request_reply", "AuthInitError", "Identity", "IdentityError", "NKEY_ENV", "PASSWORD_ENV", "ROLES", "identity_for",
    "identity_from_config", "init_auth", "role_identity", "worker_agents", "worker_identity",
    "BodyTooLargeError", "ClusterError", "CodecError", "DeclarationError", "ELECTION_POLL", "LocalCluster", "declare_all", "set_lazy_replicas", "is_transient", "publish_retrying", "retrying", "EmbeddedServer", "InvalidJSONError", "NatsUnavailableError",
    "AckedPublisher", "CasBucket", "CasConflictError", "BrokerClosedError", "BrokerUnavailableError", "Message", "OutcomeStore", "WorkQueue", "translated",
    "ServerAddress", "TRANSIENT_ERRORS", "ServerNotReadyError", "ServerOptions", "connect", "consumer_config", "decode",
    "dead_letter_headers", "declare_pool_consumer", "declare_streams", "error_line", "result_body", "die_with_parent", "encode", "jetstream", "key_value",
    "one_line", "publish_task", "read_stream", "ResultCollector", "collect_results", "task_id_of", "server_binary", "stream_configs", "subjects", "wait_ready", "monitor", "catalog", "StaleWatchError", "reconnects", "watch_update",
]
