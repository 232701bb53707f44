"""Subject, stream, bucket and header names: the wire contract as pure functions.

Nothing here does I/O. Every name another NATS client may depend on is built
here and nowhere else (DESIGN.md §3 and §5).
"""

from __future__ import annotations

from config.errors import BrokerError

TASKS_STREAM = "TASKS"
RESULTS_STREAM = "RESULTS"
DLQ_STREAM = "DLQ"
EXITS_STREAM = "WORKER_EXITS"

REGISTRY_BUCKET = "registry"
AGENT_STATE_BUCKET = "agent_state"
VARIABLES_BUCKET = "variables"
ATTEMPTS_BUCKET = "task_attempts"  # the attempt journal of workers (keys <pool>.<stream seq>)
CONSENSUS_BUCKET = "consensus"
QUOTA_BUCKET = "quota"
BARRIER_BUCKET = "barriers"
LEASE_BUCKET = "leases"

SERVICE_NAME = "foundation"
METRICS_ROUNDS = "foundation.metrics.rounds"  # coordination rounds run outside a node, counted by one node

# Header names. Nats-Msg-Id is the server's deduplication header.
MSG_ID = "Nats-Msg-Id"
REPLY_TO = "Foundation-Reply-To"
TASK_ID = "Foundation-Task-Id"
POOL = "Foundation-Pool"
ERROR = "Foundation-Error"
ATTEMPTS = "Foundation-Attempts"
# A KV bucket's operation header, on deletes and purges (a put has none).
KV_OPERATION = "KV-Operation"
KV_DELETE = "DEL"
KV_PURGE = "PURGE"

_FORBIDDEN = set(" \t\r\n.*>")
INBOX_PREFIX = "_INBOX."  # where replies go; see broker.replies


def token(value: str, what: str = "subject token") -> str:
    """Check that ``value`` can stand as one token of a subject.

    Raises:
        BrokerError: the value is empty or holds ``.``, ``*``, ``>`` or white space.
    """
    if not value or _FORBIDDEN & set(value):
        raise BrokerError(f"{what} {value!r} must be non-empty and hold no '.', '*', '>' or white space")
    return value


def is_inbox(subject: str) -> bool:
    """``_INBOX.<token>...``: a literal subject (no wildcards, no empty tokens) under the inbox prefix."""
    if not subject.startswith(INBOX_PREFIX) or len(subject) > 1024:
        return False
    tokens = subject[len(INBOX_PREFIX):].split(".")
    return all(t and not (_FORBIDDEN & set(t)) for t in tokens)


def tasks(pool: str) -> str:
    return f"tasks.{token(pool, 'pool name')}"


def results(pool: str) -> str:
    return f"results.{token(pool, 'pool name')}"


def dlq(pool: str) -> str:
    return f"dlq.{token(pool, 'pool name')}"


def pool_of(subject: str) -> str:
    """The pool a ``tasks.<pool>`` / ``results.<pool>`` / ``dlq.<pool>`` subject names."""
    return subject.split(".", 1)[1]


def consumer(pool: str) -> str:
    """Durable name of the pool's pull consumer on ``TASKS``."""
    return f"pool-{token(pool, 'pool name')}"


def exit_events(node: str = "*") -> list[str]:
    """Subjects of the worker exit and quota breach events (the ``WORKER_EXITS`` stream)."""
    return [f"foundation.events.{node}.exit", f"foundation.events.{node}.quota"]


def event(node: str, kind: str) -> str:
    return f"foundation.events.{token(node, 'node name')}.{token(kind, 'event kind')}"


def node_events(node: str) -> str:
    """The events of one node named by kind, ``foundation.events.<node>.*`` (exits, quota breaches)."""
    return f"foundation.events.{token(node, 'node name')}.*"


def events(node: str = "*") -> str:
    """Wildcard for the lifecycle events of one node (or of all)."""
    return f"foundation.events.{node}.>"


def coord(protocol: str, group: str, session: str, phase: str) -> str:
    return ".".join(
        (
            "coord",
            token(protocol, "protocol"),
            token(group, "group"),
            token(session, "session"),
            token(phase, "phase"),
        )
    )


def default_task_id(stream_seq: int) -> str:
    """Task id of a task published without ``Nats-Msg-Id``."""
    return f"{TASKS_STREAM}:{stream_seq}"
