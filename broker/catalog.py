"""Every stream and KV bucket Foundation declares, in one place.

``foundation up`` declares all of them before any worker or service starts
(:func:`broker.streams.declare_all`), each with ``nats.replicas`` replicas,
so on a cluster every object is replicated, whoever touches it first. Code
that opens one of them later (:func:`broker.streams.key_value`) takes its
settings from here; opened outside a node (a script, a test) and missing, it
is created with one replica, and the next ``foundation up`` raises it to
``nats.replicas``.

A new stream or bucket belongs here: one that is not listed is neither
replicated nor checked.

Settings are split in two: what NATS lets a declaration change in place
(replicas, limits, subjects) and what it does not (retention, storage).
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from broker import subjects
from config.schema import NatsConfig

VARIABLES_HISTORY = 64  # revisions kept per variable: the most a NATS KV bucket keeps per key
ATTEMPTS_TTL = 24 * 3600.0  # far beyond the longest redelivery schedule
EXITS_MAX_AGE = 24 * 3600.0
EXITS_MAX_MSGS = 100_000
# The longest a registry record lives without being rewritten, whatever TTL
# its writer set (or none): an entry nobody heartbeats always goes away.
# Every registry TTL must be shorter (heartbeats rewrite every ttl / 3).
REGISTRY_MAX_AGE = 300.0


@dataclass(frozen=True)
class BucketSpec:
    """A KV bucket: values kept per key, max age of a value, per-put TTLs allowed."""

    name: str
    history: int = 1
    ttl: float | None = None
    per_key_ttl: bool = False  # msg_ttl on single puts (server 2.11+)


BUCKETS: dict[str, BucketSpec] = {
    b.name: b
    for b in (
        BucketSpec(subjects.REGISTRY_BUCKET, ttl=REGISTRY_MAX_AGE, per_key_ttl=True),
        BucketSpec(subjects.AGENT_STATE_BUCKET),
        BucketSpec(subjects.VARIABLES_BUCKET, history=VARIABLES_HISTORY),
        BucketSpec(subjects.CONSENSUS_BUCKET),
        BucketSpec(subjects.QUOTA_BUCKET, per_key_ttl=True),
        BucketSpec(subjects.BARRIER_BUCKET),
        BucketSpec(subjects.LEASE_BUCKET),
        BucketSpec(subjects.ATTEMPTS_BUCKET, ttl=ATTEMPTS_TTL),
    )
}


def bucket_stream(bucket: str) -> str:
    """The stream behind KV bucket ``bucket``."""
    return f"KV_{bucket}"


def streams(cfg: NatsConfig, replicas: int = 1) -> list[StreamConfig]:
    """The streams: the task contract (DESIGN.md §3) and the worker exit log."""
    return [
        StreamConfig(
            name=subjects.TASKS_STREAM,
            subjects=["tasks.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=cfg.duplicate_window,
            num_replicas=replicas,
            discard=DiscardPolicy.OLD,
        ),
        StreamConfig(
            name=subjects.RESULTS_STREAM,
            subjects=["results.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=cfg.results_max_age,
            duplicate_window=cfg.duplicate_window,
            num_replicas=replicas,
        ),
        StreamConfig(
            name=subjects.DLQ_STREAM,
            subjects=["dlq.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=cfg.dlq_max_age,
            duplicate_window=cfg.duplicate_window,
            num_replicas=replicas,
        ),
        exits_stream(replicas),
    ]


def exits_stream(replicas: int = 1) -> StreamConfig:
    """``WORKER_EXITS``: exit and quota events, for explaining dead letters."""
    return StreamConfig(
        name=subjects.EXITS_STREAM,
        subjects=subjects.exit_events(),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=EXITS_MAX_AGE,
        max_msgs=EXITS_MAX_MSGS,
        discard=DiscardPolicy.OLD,
        num_replicas=replicas,
    )


# Fields a declaration sets; the rest of an existing object's config is kept.
MUTABLE_FIELDS = ("subjects", "num_replicas", "max_age", "max_msgs", "max_msgs_per_subject", "duplicate_window", "discard", "allow_msg_ttl")
FIXED_FIELDS = ("retention", "storage")  # NATS refuses to change these in place
