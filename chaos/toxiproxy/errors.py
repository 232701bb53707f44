"""The toxiproxy API's errors and JSON strings, rendered as toxiproxy renders them.

An error answer is ``{"error":"<message>","status":<code>}`` followed by a
newline, sent with ``Content-Type: text/plain; charset=utf-8`` (toxiproxy
writes it through Go's ``http.Error``).
"""

from __future__ import annotations

import json

from chaos.errors import ChaosError


class ApiError(ChaosError):
    """An answer of the toxiproxy API other than success: its message and HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def body(self) -> bytes:
        return f'{{"error":{json_str(self.message)},"status":{self.status}}}\n'.encode()


def bad_request(why: str) -> ApiError:
    return ApiError(f"bad request body: {why}", 400)


def missing_field(what: str) -> ApiError:
    return ApiError(f"missing required field: {what}", 400)


PROXY_NOT_FOUND = ApiError("proxy not found", 404)
PROXY_EXISTS = ApiError("proxy already exists", 409)
TOXIC_NOT_FOUND = ApiError("toxic not found", 404)
TOXIC_EXISTS = ApiError("toxic already exists", 409)


def json_str(text: str) -> str:
    """A JSON string as Go's encoding/json writes it (HTML characters escaped, UTF-8 kept)."""
    out = json.dumps(text, ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        out = out.replace(ch, esc)
    return out
