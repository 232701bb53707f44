"""A KV bucket whose keys expire one by one, and say so to their watchers.

Every write to such a bucket may carry a per-message TTL (the ``Nats-TTL``
header): a key that stops being rewritten goes away on its own. With subject
delete markers on, the server writes a marker when a TTL runs out, so every
watcher learns of the expiry as a change rather than by polling. The bucket's
max age bounds how long any record stays, whatever TTL its writer asked for
(a writer may also leave the header out). The registry and the quota ledger
are such buckets.

Their records are read as the last message under a key (a value, a delete or
an expiry marker: its stream sequence is the key's revision) and written with
a compare-and-set on that sequence, so a write over a tombstone or a marker
needs no special case.
"""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors

from broker import subjects
from broker.casbucket import CasConflictError
from broker.connection import JetStream, translated
from broker.stored import StoredMessage, get_message
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


TTL = "Nats-TTL"  # whole seconds this message lives
EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"  # a write's compare-and-set: the key's last sequence
MARKER_REASON = "Nats-Marker-Reason"  # set by the server on the marker it writes when a TTL runs out

_WRONG_LAST_SEQUENCE = (10071, 10164)  # JetStream's "wrong last sequence" API error codes


async def latest_record(js: JetStream, bucket: str, key: str) -> StoredMessage | None:
    """The last message stored under ``key``: a value, a delete or an expiry marker
    (its ``seq`` is the key's revision); ``None`` if the key never had one, or it aged out.

    Raises:
        BrokerError: NATS refused or did not answer.
    """
    return await get_message(js, f"KV_{bucket}", 0, subject=f"$KV.{bucket}.{key}")


async def write_record(js: JetStream, bucket: str, key: str, data: bytes, *, ttl_s: int | None = None,
                       revision: int | None = None, delete: bool = False) -> int:
    """Store ``data`` under ``key`` (with ``delete``, a delete marker); the new revision.

    Args:
        ttl_s: whole seconds the value lives (``None``: until the bucket's max age).
        revision: write only if the key's last message is still this one (0: it has none).
        delete: write a delete (``data`` should then be empty).

    Raises:
        CasConflictError: the key is no longer at ``revision``.
        BrokerError: NATS refused or did not answer (:class:`~broker.BrokerUnavailableError`:
            a retry may succeed; the write may or may not have been stored).
    """
    headers: dict[str, str] = {}
    if delete:
        headers[subjects.KV_OPERATION] = subjects.KV_DELETE
    if ttl_s is not None:
        headers[TTL] = str(ttl_s)
    if revision is not None:
        headers[EXPECTED_LAST] = str(revision)
    try:
        ack = await js.publish(f"$KV.{bucket}.{key}", data, headers=headers or None)
    except nats.js.errors.APIError as exc:
        if exc.err_code in _WRONG_LAST_SEQUENCE:
            raise CasConflictError(f"{key} in bucket {bucket} is no longer at revision {revision}") from exc
        raise translated(exc, f"writing {key} in bucket {bucket}") from exc
    except (nats.errors.Error, asyncio.TimeoutError) as exc:
        raise translated(exc, f"writing {key} in bucket {bucket}") from exc
    return ack.seq
