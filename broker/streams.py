"""Idempotent declarations of the streams, the pool consumers and KV buckets.

Declaring is safe to repeat and to race: every node declares at start, and a
declaration that finds the object already there updates it to match.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from broker import subjects
from config.errors import BrokerError
from config.schema import NatsConfig, PoolConfig

log = logging.getLogger("foundation.broker")


def stream_configs(cfg: NatsConfig, replicas: int = 1) -> list[StreamConfig]:
    """The three streams of the task contract (DESIGN.md §3)."""
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
    ]


async def declare_streams(js: JetStreamContext, cfg: NatsConfig, replicas: int = 1) -> None:
    """Create or update ``TASKS``, ``RESULTS`` and ``DLQ``.

    Raises:
        BrokerError: the server refused a declaration.
    """
    for sc in stream_configs(cfg, replicas):
        try:
            try:
                await js.stream_info(sc.name)
            except NotFoundError:
                await js.add_stream(sc)
            else:
                await js.update_stream(sc)
        except BadRequestError as exc:
            # Lost a creation race with another node: the stream exists now.
            if exc.err_code == 10058:
                continue
            raise BrokerError(f"cannot declare stream {sc.name}: {exc.description}") from exc


def consumer_config(pool: PoolConfig) -> ConsumerConfig:
    """The durable pull consumer of a pool.

    Retry delays come from the worker's ``nak(delay)``, not from the
    consumer's ``backoff`` list: the server uses ``backoff[0]`` as the ack
    deadline of the first delivery, which would redeliver any task that runs
    longer than the first retry delay.
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
        await js.add_consumer(subjects.TASKS_STREAM, cc)
    except BadRequestError as exc:
        raise BrokerError(f"cannot declare consumer for pool {pool.name!r}: {exc.description}") from exc


async def key_value(
    js: JetStreamContext,
    bucket: str,
    *,
    history: int = 1,
    ttl: float | None = None,
    per_key_ttl: bool = False,
) -> KeyValue:
    """Open a KV bucket, creating it if needed.

    Args:
        bucket: bucket name.
        history: values kept per key.
        ttl: max age of every value, seconds.
        per_key_ttl: allow ``msg_ttl`` on individual puts (server 2.11+).
    """
    try:
        return await js.key_value(bucket)
    except (NotFoundError, BucketNotFoundError):
        pass
    cfg = KeyValueConfig(bucket=bucket, history=history, ttl=ttl, storage=StorageType.FILE)
    try:
        kv = await js.create_key_value(cfg)
    except BadRequestError as exc:
        if exc.err_code == 10058:  # created concurrently by another process
            return await js.key_value(bucket)
        raise BrokerError(f"cannot create KV bucket {bucket!r}: {exc.description}") from exc
    if per_key_ttl:
        info = await js.stream_info(f"KV_{bucket}")
        info.config.allow_msg_ttl = True
        await js.update_stream(info.config)
    return kv

