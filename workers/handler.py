"""Loading a pool's handler and calling it the same way whatever its shape.

A handler is ``handler(payload)`` or ``handler(payload, ctx)``, sync or async.
Sync handlers run on a thread pool so they never block the event loop.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from config.errors import WorkerError


class HandlerImportError(WorkerError):
    """The ``module:callable`` of a pool cannot be imported or is not callable."""


def resolve(spec: str) -> Callable[..., Any]:
    """Import ``module:callable`` (``callable`` may be dotted: ``mod:Class.method``).

    Raises:
        HandlerImportError: with the module's own error in the message.
    """
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # any error raised while importing user code
        raise HandlerImportError(f"cannot import handler module {module_name!r} ({spec}): {type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise HandlerImportError(f"module {module_name!r} has no attribute {attr!r} ({spec})") from None
    if not callable(obj):
        raise HandlerImportError(f"handler {spec} is a {type(obj).__name__}, not a callable")
    return obj


def _wants_ctx(fn: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


class Handler:
    """A resolved handler, callable as ``await handler(payload, ctx)``."""

    def __init__(self, fn: Callable[..., Any], *, threads: int = 8, spec: str = "") -> None:
        self.fn = fn
        self.spec = spec or getattr(fn, "__qualname__", repr(fn))
        self.wants_ctx = _wants_ctx(fn)
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))
        self._pool = None if self.is_async else ThreadPoolExecutor(max_workers=threads, thread_name_prefix="handler")

    @classmethod
    def load(cls, spec: str, *, threads: int = 8) -> "Handler":
        return cls(resolve(spec), threads=threads, spec=spec)

    def __call__(self, payload: Any, ctx: Any) -> Awaitable[Any]:
        args = (payload, ctx) if self.wants_ctx else (payload,)
        if self.is_async:
            return self.fn(*args)
        assert self._pool is not None
        return asyncio.get_running_loop().run_in_executor(self._pool, lambda: self.fn(*args))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=False)
