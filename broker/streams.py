"""Declaring the catalog's streams and buckets, and the pool consumers.

Declaring is safe to repeat and to race: every node declares at start. A
declaration that finds its object already there compares the settings the
catalog owns (:data:`broker.catalog.MUTABLE_FIELDS`, ``FIXED_FIELDS``) and:

* updates the object when only changeable settings differ (replicas, limits,
  subjects) — raising ``nats.replicas`` from 1 to 3 on a cluster is this;
* raises :class:`DeclarationError` naming the object, what differs and how
  to fix it, when NATS cannot change a setting in place (retention, storage)
  or refuses the update (more replicas than the cluster has servers, replicas
  on a server that is not clustered). ``foundation up`` exits 2 with it.

Settings the catalog does not own (an operator's ``max_bytes``, say) are
left as they are. Calls failing while NATS elects a leader are retried
(:func:`broker.retry.retrying`).
"""

from __future__ import annotations

import logging
import math
from enum import Enum
from dataclasses import replace
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import APIError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from broker import catalog, subjects
from broker.retry import retrying
from config.errors import BrokerError
from config.schema import NatsConfig, PoolConfig

log = logging.getLogger("foundation.broker")

KeyValueBucket = KeyValue
"""A KV bucket as :func:`key_value` opens it: ``get``, ``put``, ``create``, ``update``, ``watch``."""

_EXISTS = 10058  # stream name already in use: another node declared it first

_lazy_replicas = 1  # replicas of a bucket created on first use (key_value), see set_lazy_replicas


def set_lazy_replicas(replicas: int) -> None:
    """Replicas of the buckets this process creates on first use (default 1).

    A node declares every catalog bucket with ``nats.replicas`` before
    anything opens one; this is for processes that create buckets of their
    own on a cluster (tests, tools).
    """
    global _lazy_replicas
    _lazy_replicas = replicas


class DeclarationError(BrokerError):
    """A stream or bucket exists with settings this declaration cannot reach."""


def stream_configs(cfg: NatsConfig, replicas: int | None = None) -> list[StreamConfig]:
    """The catalog's streams with ``replicas`` (default ``cfg.replicas``)."""
    return catalog.streams(cfg, cfg.replicas if replicas is None else replicas)


async def declare_all(js: JetStreamContext, cfg: NatsConfig) -> None:
    """Declare every stream and bucket of the catalog with ``cfg.replicas``.

    Raises:
        DeclarationError: an object differs in a way that needs the operator.
        NatsUnavailableError: NATS did not answer within the retry deadline.
    """
    await declare_streams(js, cfg)
    for spec in catalog.BUCKETS.values():
        await _declare(js, _bucket_config(spec, cfg.replicas), what=f"KV bucket {spec.name!r}", create=lambda s=spec: _create_bucket(js, s, cfg.replicas))


async def declare_streams(js: JetStreamContext, cfg: NatsConfig, replicas: int | None = None) -> None:
    """Create or update the catalog's streams (``TASKS``, ``RESULTS``, ``DLQ``, ``WORKER_EXITS``).

    Raises:
        DeclarationError: as :func:`declare_all`.
    """
    for sc in stream_configs(cfg, replicas):
        await _declare(js, sc, what=f"stream {sc.name}", create=lambda sc=sc: js.add_stream(sc))


def _bucket_config(spec: catalog.BucketSpec, replicas: int) -> StreamConfig:
    """The stream settings of a bucket the catalog owns (see MUTABLE_FIELDS)."""
    return StreamConfig(
        name=catalog.bucket_stream(spec.name),
        num_replicas=replicas,
        max_msgs_per_subject=spec.history,
        max_age=spec.ttl or 0.0,
        allow_msg_ttl=True if spec.per_key_ttl else None,
        storage=StorageType.FILE,
    )


async def _create_bucket(js: JetStreamContext, spec: catalog.BucketSpec, replicas: int) -> KeyValue:
    kv = await js.create_key_value(KeyValueConfig(bucket=spec.name, history=spec.history, ttl=spec.ttl, replicas=replicas, storage=StorageType.FILE))
    if spec.per_key_ttl:
        info = await js.stream_info(catalog.bucket_stream(spec.name))
        if not info.config.allow_msg_ttl:
            await js.update_stream(replace(info.config, allow_msg_ttl=True))
    return kv


def _shown(value: Any) -> str:
    return repr(value.value if isinstance(value, Enum) else value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a or 0), float(b or 0), abs_tol=1e-3)
    return a == b


def differences(have: StreamConfig, want: StreamConfig, fields: tuple[str, ...]) -> list[tuple[str, Any, Any]]:
    """``(field, have, want)`` for each of ``fields`` that ``want`` sets and ``have`` lacks."""
    out = []
    for name in fields:
        w = getattr(want, name)
        if w is None:
            continue  # not owned by this declaration
        h = getattr(have, name)
        if not _same(h, w):
            out.append((name, h, w))
    return out


def _fix_hint(name: str, exc: APIError, replicas: int) -> str:
    if exc.err_code == 10074:
        return f"NATS here is a single server without clustering: set nats.replicas = 1, or point nats.url at a cluster of at least {replicas} servers"
    if exc.err_code == 10005:
        return f"the cluster has fewer than {replicas} servers with JetStream online: set nats.replicas to at most the cluster size, or start the missing servers"
    return f"fix the setting, or remove {name} so it is declared afresh"


async def _declare(js: JetStreamContext, want: StreamConfig, *, what: str, create: Any) -> None:
    name = want.name
    assert name is not None
    replicas = want.num_replicas or 1

    async def info() -> StreamConfig | None:
        try:
            return (await js.stream_info(name)).config
        except NotFoundError:
            return None

    have = await retrying(info, what=f"look up {what}")
    if have is None:
        try:
            await retrying(create, what=f"create {what}")
            log.info("declared %s with %d replica(s)", what, replicas)
            return
        except APIError as exc:
            if exc.err_code != _EXISTS:
                raise DeclarationError(f"cannot create {what}: {exc.description}; {_fix_hint(name, exc, replicas)}") from exc
            have = await retrying(info, what=f"look up {what}")
            assert have is not None
    fixed = differences(have, want, catalog.FIXED_FIELDS)
    if fixed:
        diff = "; ".join(f"{f} is {_shown(h)}, Foundation declares {_shown(w)}" for f, h, w in fixed)
        raise DeclarationError(
            f"{what}: {diff}. NATS cannot change this in place: move its data elsewhere and delete it "
            f"(nats stream rm {name}), then start again")
    changes = differences(have, want, catalog.MUTABLE_FIELDS)
    if not changes:
        return
    updated = replace(have, **{f: w for f, _, w in changes})
    try:
        await retrying(lambda: js.update_stream(updated), what=f"update {what}")
    except APIError as exc:
        diff = ", ".join(f"{f} {_shown(h)} -> {_shown(w)}" for f, h, w in changes)
        raise DeclarationError(f"cannot update {what} ({diff}): {exc.description}; {_fix_hint(name, exc, replicas)}") from exc
    log.info("updated %s: %s", what, ", ".join(f"{f} {_shown(h)} -> {_shown(w)}" for f, h, w in changes))


def consumer_config(pool: PoolConfig) -> ConsumerConfig:
    """The durable pull consumer of a pool.

    Retry delays come from the worker's ``nak(delay)``, not from the
    consumer's ``backoff`` list: the server uses ``backoff[0]`` as the ack
    deadline of the first delivery, which would redeliver any task that runs
    longer than the first retry delay. Its replicas follow ``TASKS``.
    """
    most_workers = max(pool.size, pool.max_size)
    return ConsumerConfig(
        durable_name=subjects.consumer(pool.name),
        filter_subject=subjects.tasks(pool.name),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=pool.ack_wait,
        max_deliver=pool.max_deliver,
        # Room for every worker's batch twice over, so fetches never starve.
        max_ack_pending=max(most_workers * pool.concurrency * 2, pool.fetch_batch * 2),
        max_waiting=512,
    )


async def declare_pool_consumer(js: JetStreamContext, pool: PoolConfig) -> None:
    """Create or update the pool's consumer on ``TASKS``."""
    cc = consumer_config(pool)
    try:
        await retrying(lambda: js.add_consumer(subjects.TASKS_STREAM, cc), what=f"declare the consumer of pool {pool.name!r}")
    except APIError as exc:
        raise BrokerError(f"cannot declare consumer for pool {pool.name!r}: {exc.description}") from exc


async def key_value(
    js: JetStreamContext,
    bucket: str,
    *,
    history: int = 1,
    ttl: float | None = None,
    per_key_ttl: bool = False,
) -> KeyValueBucket:
    """Open a KV bucket, creating it (with one replica, see :func:`set_lazy_replicas`) if it is missing.

    A bucket of the catalog takes the catalog's settings; the keyword
    arguments describe any other bucket (a test's, say).

    Args:
        bucket: bucket name.
        history: values kept per key.
        ttl: max age of every value, seconds.
        per_key_ttl: allow ``msg_ttl`` on individual puts (server 2.11+).
    """
    spec = catalog.BUCKETS.get(bucket) or catalog.BucketSpec(bucket, history=history, ttl=ttl, per_key_ttl=per_key_ttl)

    async def open_() -> KeyValue | None:
        try:
            return await js.key_value(bucket)
        except (NotFoundError, BucketNotFoundError):
            return None

    kv = await retrying(open_, what=f"open KV bucket {bucket!r}")
    if kv is not None:
        return kv
    try:
        return await retrying(lambda: _create_bucket(js, spec, _lazy_replicas), what=f"create KV bucket {bucket!r}")
    except APIError as exc:
        if exc.err_code == _EXISTS:  # created concurrently by another process
            return await retrying(lambda: js.key_value(bucket), what=f"open KV bucket {bucket!r}")
        raise BrokerError(f"cannot create KV bucket {bucket!r}: {exc.description}") from exc
