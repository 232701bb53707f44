"""The subject permissions of each role (DESIGN.md §10), as data.

``foundation auth init`` renders these into ``auth.conf``; the tests check
them against a real server. Nothing here does I/O.

Roles:

``client``
    Publishes tasks, reads results (core subscriptions and JetStream
    consumers on ``RESULTS``), receives replies in its own inboxes.
``worker``
    One identity per agent ``<node>.<pool>.<n>``, so the server itself keeps
    it to its own keys: it consumes and acknowledges only its pool's
    consumer, publishes ``results.<pool>`` / ``dlq.<pool>``, writes only
    ``$KV.registry.<agent>`` and ``$KV.agent_state.<agent>``, reads the
    buckets, asks its pool's quota service, answers protocol conversations.
``node``
    A node's supervisor: everything (it declares streams, consumers and
    buckets, removes dead agents' entries, runs the quota and control
    services), except forging server advisories and system events.
``operator``
    Control requests, ``vars propose``, reads everything; never publishes
    tasks, results or dead letters, never deletes or purges streams.

Every role also gets explicit deny rules for what it must never do (deny
wins over allow in NATS), so a later widening of an allow list cannot
silently hand out administration.

Replies: the ``worker.nk`` template answers only requests it received
(``allow_responses``: one answer each, to the reply subject of that very
message). A worker slot and the operator may publish to any ``_INBOX.>``:
a worker sends ``Foundation-Reply-To`` results there and the operator's
auctions answer bidders' inboxes, neither being a response to a request
received, which ``allow_responses`` would not cover. The client answers
nothing and may not publish to inboxes.

Inboxes: an nkey identity uses the inbox prefix ``_INBOX.<its public key>``
(:func:`inbox_prefix`) and may subscribe only there, so no role but
``node``/``operator`` can read another identity's replies.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker import subjects

JS_API = "$JS.API"

# Never for anyone but node.
_ADMIN = (
    f"{JS_API}.STREAM.CREATE.>", f"{JS_API}.STREAM.UPDATE.>", f"{JS_API}.STREAM.DELETE.>",
    f"{JS_API}.STREAM.PURGE.>", f"{JS_API}.STREAM.RESTORE.>", f"{JS_API}.STREAM.SNAPSHOT.>",
    f"{JS_API}.STREAM.PEER.>", f"{JS_API}.STREAM.LEADER.>", f"{JS_API}.META.>", f"{JS_API}.SERVER.>",
    f"{JS_API}.CONSUMER.DELETE.>", f"{JS_API}.CONSUMER.DURABLE.CREATE.>", f"{JS_API}.CONSUMER.PAUSE.>",
    f"{JS_API}.CONSUMER.RESET.>", f"{JS_API}.CONSUMER.UNPIN.>", f"{JS_API}.CONSUMER.LEADER.>",
    f"{JS_API}.ACCOUNT.>",
)
# Never for anyone: only the server publishes these.
_FORGERY = ("$JS.EVENT.>", "$SYS.>")
_CONTROL = ("$SRV.>", "foundation.control.>", "coord.bft.*._control.>")  # node control, the BFT pause switch
_TASK_FLOW = ("tasks.>", "results.>", "dlq.>")
_STATE = (f"$KV.{subjects.REGISTRY_BUCKET}.>", f"$KV.{subjects.AGENT_STATE_BUCKET}.>", f"$KV.{subjects.VARIABLES_BUCKET}.>")
_BUCKETS = (subjects.REGISTRY_BUCKET, subjects.AGENT_STATE_BUCKET, subjects.VARIABLES_BUCKET)
ATTEMPTS_BUCKET = subjects.ATTEMPTS_BUCKET
EXITS_STREAM = subjects.EXITS_STREAM
CONSENSUS_BUCKET = "consensus"  # decisions of consensus rounds, written by their proposer (a node)


@dataclass(frozen=True)
class Permissions:
    """What one user may publish and subscribe to."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    deny_publish: tuple[str, ...] = ()
    deny_subscribe: tuple[str, ...] = ()
    allow_responses: bool = False  # may answer each request it received, once, whatever its reply subject


def inbox_prefix(public_key: str) -> str:
    """The inbox prefix of an nkey identity: its replies arrive under ``<prefix>.>``."""
    return f"_INBOX.{public_key}"


def _reading(stream: str) -> tuple[str, ...]:
    """Reading a stream: info, message gets, and ephemeral (ordered) consumers, whose
    flow control the client answers on ``$JS.FC``."""
    return (
        f"{JS_API}.STREAM.NAMES",  # how a client finds the stream of a subject
        f"{JS_API}.STREAM.INFO.{stream}", f"{JS_API}.STREAM.MSG.GET.{stream}", f"{JS_API}.DIRECT.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}.>", f"{JS_API}.CONSUMER.CREATE.{stream}", f"{JS_API}.CONSUMER.CREATE.{stream}.>",
        f"{JS_API}.CONSUMER.INFO.{stream}.>", f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.>", f"$JS.FC.{stream}.>",
    )


def client(public_key: str) -> Permissions:
    return Permissions(
        publish=("tasks.>", f"{JS_API}.INFO", f"{JS_API}.STREAM.INFO.{subjects.TASKS_STREAM}",
                 *_reading(subjects.RESULTS_STREAM)),
        subscribe=("results.>", f"{inbox_prefix(public_key)}.>"),
        deny_publish=(*_ADMIN, *_FORGERY, *_CONTROL, "results.>", "dlq.>", *_STATE, "coord.>"),
    )


def worker(public_key: str, agent: str, pool: str) -> Permissions:
    """The identity of agent ``<node>.<pool>.<n>``."""
    consumer = f"{subjects.TASKS_STREAM}.{subjects.consumer(pool)}"
    kv_reads = tuple(s for stream in (*(f"KV_{b}" for b in (*_BUCKETS, ATTEMPTS_BUCKET)), EXITS_STREAM)
                     for s in _reading(stream))
    return Permissions(
        publish=(
            f"$KV.{ATTEMPTS_BUCKET}.{pool}.>",
            f"{JS_API}.CONSUMER.INFO.{consumer}", f"{JS_API}.CONSUMER.MSG.NEXT.{consumer}", f"$JS.ACK.{consumer}.>",
            # Dead-lettering a task whose deliveries killed workers: read it, then remove it (DESIGN.md §3).
            f"{JS_API}.STREAM.MSG.GET.{subjects.TASKS_STREAM}", f"{JS_API}.STREAM.MSG.DELETE.{subjects.TASKS_STREAM}",
            subjects.results(pool), subjects.dlq(pool),
            f"$KV.{subjects.REGISTRY_BUCKET}.{agent}", f"$KV.{subjects.AGENT_STATE_BUCKET}.{agent}",
            *kv_reads,
            subjects.coord("quota", pool, "service", "request"),
            f"coord.consensus.*.*.vote.{agent}",  # its votes: counted for the agent the subject names
            # Market dispatch among the pool's agents: calls for proposals, and
            # answers on its own subject (a bid counts for the agent it names).
            f"coord.cnp.{pool}.*.cfp", f"coord.cnp.{pool}.*.reply.{agent}",
            subjects.METRICS_ROUNDS,
            "_INBOX.>",  # Foundation-Reply-To results and protocol answers
        ),
        subscribe=(
            f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{consumer}",
            "coord.consensus.>", f"coord.cnp.{pool}.>", f"{inbox_prefix(public_key)}.>",
        ),
        deny_publish=(*_ADMIN, *_FORGERY, *_CONTROL, "tasks.>", f"$KV.{subjects.VARIABLES_BUCKET}.>"),
    )


def worker_template(public_key: str) -> Permissions:
    """``worker.nk``: a protocol participant that is no worker slot (a Byzantine
    member, a voter in a tool). It reads the buckets and takes part in
    conversations; it consumes no tasks and writes no agent's key."""
    kv_reads = tuple(s for bucket in _BUCKETS for s in _reading(f"KV_{bucket}"))
    return Permissions(
        # No inbox at all: it answers (a Byzantine change request) only what it was asked.
        publish=(*kv_reads, "coord.bft.>", subjects.METRICS_ROUNDS),
        subscribe=("coord.consensus.>", "coord.bft.>", f"{inbox_prefix(public_key)}.>"),
        deny_publish=(*_ADMIN, *_FORGERY, *_CONTROL, *_TASK_FLOW, *_STATE),
        allow_responses=True,
    )


def node() -> Permissions:
    return Permissions(publish=(">",), subscribe=(">",), deny_publish=_FORGERY)


def operator(public_key: str) -> Permissions:
    streams = (subjects.RESULTS_STREAM, subjects.DLQ_STREAM, EXITS_STREAM,
               *(f"KV_{b}" for b in (*_BUCKETS, ATTEMPTS_BUCKET, CONSENSUS_BUCKET)))
    reads = tuple(s for stream in streams for s in _reading(stream))
    return Permissions(
        publish=(
            "$SRV.>", "foundation.control.>", "foundation.registry.query",
            f"{JS_API}.INFO", f"{JS_API}.STREAM.NAMES", f"{JS_API}.STREAM.LIST", f"{JS_API}.STREAM.INFO.*",
            f"{JS_API}.CONSUMER.NAMES.*", f"{JS_API}.CONSUMER.LIST.*", f"{JS_API}.CONSUMER.INFO.*.*", *reads,
            # `vars propose` is a control request: a node runs the vote and writes the value.
            "coord.bft.>",
            "coord.cnp.*.*.cfp",  # `market auction` (answers reach it on the subjects of the bidders)
            subjects.METRICS_ROUNDS,  # the rounds it runs (auctions), for a node to count
            "_INBOX.>",
        ),
        subscribe=(">",),
        deny_publish=(*_ADMIN, *_FORGERY, "coord.bft.*._control.>", *_TASK_FLOW, *_STATE, "coord.consensus.>"),
    )
