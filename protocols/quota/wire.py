"""Quota messages: the subject, requests and replies (JSON, any language).

Subject: ``coord.quota.<pool>.service.request`` — only the elected service of
the pool subscribes. Requests::

    {"v": 1, "op": "tokens", "holder": "echo.0", "want": 10}
    {"v": 1, "op": "slots",  "holder": "echo.0", "hold": 3}     # absolute: hold 0 returns all

Replies::

    {"v": 1, "ok": true, "op": "tokens", "tokens": 10, "expires_in": 0.734,
     "window": 1767225600, "grant": "3-17", "term": 3}
    {"v": 1, "ok": true, "op": "slots", "held": 2, "ttl": 10.0, "term": 3}
    {"v": 1, "ok": false, "reason": "exhausted", "retry_in": 0.266, "term": 3}
    {"v": 1, "ok": false, "reason": "bad_request", "error": "..."}

Durations are relative seconds (``expires_in``, ``ttl``, ``retry_in``): a
client adds them to its own monotonic clock read *before* it sent the
request, so clocks never need to agree and the client's deadline is never
later than the service's. A ``slots`` reply may hold fewer than asked (the
budget is full); it never takes away slots the holder already had unless it
asked for fewer.

Any client could answer on the service's subject, so a client trusts no
number in a reply: durations are finite and cut to :data:`MAX_REPLY_SECONDS`
(``reply_seconds``), and a grant is never more than was asked for
(``reply_count``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from broker import codec, subjects
from protocols.quota.errors import QuotaError

WIRE_VERSION = 1
MAX_MESSAGE_BYTES = 4096


def request_subject(pool: str) -> str:
    """Where the elected quota service of ``pool`` listens."""
    return subjects.coord("quota", pool, "service", "request")


class BadQuotaRequestError(QuotaError):
    """A quota request is malformed."""


@dataclass(frozen=True)
class QuotaRequest:
    op: str  # "tokens" or "slots"
    holder: str
    amount: int  # tokens wanted, or slots to hold

    def encode(self) -> bytes:
        key = "want" if self.op == "tokens" else "hold"
        return codec.encode({"v": WIRE_VERSION, "op": self.op, "holder": self.holder, key: self.amount})

    @classmethod
    def decode(cls, data: bytes) -> QuotaRequest:
        """Parse a request.

        Raises:
            BadQuotaRequestError: it is not a valid request.
        """
        try:
            body: Any = codec.decode(data, MAX_MESSAGE_BYTES)
        except codec.CodecError as exc:
            raise BadQuotaRequestError(str(exc)) from None
        if not isinstance(body, dict):
            raise BadQuotaRequestError("a quota request is a JSON object")
        op = body.get("op")
        key = {"tokens": "want", "slots": "hold"}.get(op)  # type: ignore[arg-type]
        if key is None:
            raise BadQuotaRequestError(f"unknown quota op {op!r}; use 'tokens' or 'slots'")
        holder, amount = body.get("holder"), body.get(key)
        if not isinstance(holder, str) or not holder:
            raise BadQuotaRequestError("a quota request needs a non-empty string 'holder'")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0 or (op == "tokens" and amount == 0):
            raise BadQuotaRequestError(f"{key!r} must be a {'positive' if op == 'tokens' else 'non-negative'} integer")
        return cls(op, holder, amount)


MAX_REPLY_SECONDS = 3600.0  # the longest duration a reply may carry; longer ones are cut to it


def reply_seconds(body: dict[str, Any], key: str, default: float, *, low: float = 0.0) -> float:
    """A duration from a reply, finite and within ``[low, MAX_REPLY_SECONDS]`` (``default`` if absent or bad).

    Any client could answer on the service's subject: its numbers are not trusted.
    """
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        value = default
    return min(max(float(value), low), MAX_REPLY_SECONDS)


def reply_count(body: dict[str, Any], key: str, most: int) -> int:
    """A count from a reply, an integer within ``[0, most]`` (what was asked for at most)."""
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return min(max(value, 0), most)


def reply(**fields: Any) -> bytes:
    return codec.encode({"v": WIRE_VERSION, **fields})
