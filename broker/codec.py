"""The JSON envelope codec (orjson), with a body size limit.

Decoding errors are named by condition so the worker can dead-letter them with
a reason instead of retrying something that can never succeed.
"""

from __future__ import annotations

from typing import Any

import orjson

from config.errors import BrokerError


class CodecError(BrokerError):
    """A body could not be decoded or encoded."""


class BodyTooLargeError(CodecError):
    """A body is over the configured size limit."""


class InvalidJSONError(CodecError):
    """A body is not valid JSON."""


def decode(data: bytes, limit: int | None = None) -> Any:
    """Parse a JSON body.

    Args:
        data: the raw body.
        limit: the largest accepted size in bytes; ``None`` for no limit.

    Raises:
        BodyTooLargeError: ``len(data) > limit``.
        InvalidJSONError: the body is not JSON.
    """
    if limit is not None and len(data) > limit:
        raise BodyTooLargeError(f"body of {len(data)} bytes is over the limit of {limit} bytes")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSONError(f"body is not valid JSON: {exc}") from None


def encode(value: Any) -> bytes:
    """Serialize to JSON bytes.

    Raises:
        CodecError: the value holds something JSON cannot represent.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise CodecError(f"value is not JSON-serializable: {exc}") from None


def one_line(text: str, limit: int = 1024) -> str:
    """Squash a message into one header-safe line."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
