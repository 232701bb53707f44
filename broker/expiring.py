"""A KV bucket whose keys expire one by one, and say so to their watchers.

Every write to such a bucket may carry a per-message TTL (the ``Nats-TTL``
header): a key that stops being rewritten goes away on its own. With subject
delete markers on, the server writes a marker when a TTL runs out, so every
watcher learns of the expiry as a change rather than by polling. The bucket's
max age bounds how long any record stays, whatever TTL its writer asked for
(a writer may also leave the header out). The registry is such a bucket.
"""

from __future__ import annotations

import asyncio

import nats.errors

from broker.connection import JetStream, translated
from broker.streams import KeyValueBucket, key_value


async def open_expiring_bucket(js: JetStream, bucket: str, *, marker_ttl: float, max_age: float) -> KeyValueBucket:
    """Open (creating if needed) ``bucket`` with per-key TTLs, delete markers kept
    ``marker_ttl`` seconds and a max age of ``max_age`` seconds.

    Processes that race here all write the same settings: the update is idempotent.

    Raises:
        BrokerError: NATS refused or did not answer.
    """
    kv = await key_value(js, bucket, per_key_ttl=True)
    try:
        info = await js.stream_info(f"KV_{bucket}")
        cfg = info.config
        if not cfg.allow_msg_ttl or not cfg.subject_delete_marker_ttl or cfg.max_age != max_age:
            # Both are needed for expiry by TTL to reach watchers.
            cfg.allow_msg_ttl = True
            cfg.subject_delete_marker_ttl = marker_ttl
            cfg.max_age = max_age
            await js.update_stream(cfg)
    except (nats.errors.Error, asyncio.TimeoutError) as exc:
        raise translated(exc, f"setting up expiry in bucket {bucket}") from exc
    return kv
