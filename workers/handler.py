"""Loading a pool's handler and calling it the same way whatever its shape.

A handler is ``handler(payload)`` or ``handler(payload, ctx)``, sync or async.
Sync handlers run on a pool of threads (:class:`HandlerThreads`) so they
never block the event loop; calls and their completions cross between the
loop and the threads in batches: one wake-up of the loop for every result
that came in since the last, not one per call.

:class:`HandlerCall` is the last link of a queue pool's middleware chain
(:mod:`workers.middleware`): it builds the ``ctx``, runs the handler and
turns its return value into the result body.

A stateful pool's sync handler runs instead on its agent's one thread
(:mod:`workers.stateful`), with a :class:`Serial` that runs each call there
and collects it on the loop in the order the calls ran.

A call can be *interrupted* (soft time limit): an async handler is cancelled,
so ``CancelledError`` is raised where it awaits; a sync handler gets the
exception raised asynchronously in its thread, at its next Python
instruction (a thread blocked inside C code sees it when that call returns).
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import importlib
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from broker import result_body
from config.errors import WorkerError
from workers.context import TaskContext
from workers.delivery import Delivery, Outcome


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
        self._pool = None if self.is_async else HandlerThreads(threads)

    @classmethod
    def load(cls, spec: str, *, threads: int = 8) -> "Handler":
        return cls(resolve(spec), threads=threads, spec=spec)

    def __call__(self, payload: Any, ctx: Any) -> Awaitable[Any]:
        return self.start(payload, ctx).future

    def start(self, payload: Any, ctx: Any, serial: Serial | None = None) -> "Running":
        """Start the handler; the returned :class:`Running` can be awaited or interrupted.

        A sync handler runs on ``serial.threads`` under ``serial`` if given.
        """
        args = (payload, ctx) if self.wants_ctx else (payload,)
        if self.is_async:
            return Running(asyncio.ensure_future(self.fn(*args)), None)
        if serial is not None:
            return serial.threads.submit(self.fn, args, serial)
        assert self._pool is not None
        return self._pool.submit(self.fn, args)

    def close(self) -> None:
        """Release the threads without waiting: a stuck handler must not block the exit."""
        if self._pool is not None:
            self._pool.close()


class Serial(Protocol):
    """How one sync call runs on an agent's thread (see :mod:`workers.stateful`).

    Attributes:
        threads: where the call runs.
        seconds: how long the handler ran, once it has.
        body: the result body, once collected.
    """

    threads: HandlerThreads
    seconds: float | None
    body: dict[str, Any] | None

    def run(self, call: _ThreadCall, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """On the thread: run the call with ``call.run(fn, args)`` and what goes around it."""

    def collected(self, ran: bool, ok: bool, value: Any) -> tuple[bool, Any]:
        """On the loop, for every call submitted, in the order they ran: ``(ok, value)`` to
        hand to the caller. ``ran`` is false for a call cancelled before it started."""


SPAWN_AFTER = 0.001  # seconds calls wait for a busy thread before another is started


class HandlerThreads:
    """Up to ``size`` threads running sync handler calls for one event loop.

    A call is queued in a deque; an idle thread is woken only when there is
    one (busy threads take the next call themselves), and another thread is
    started only when calls have waited :data:`SPAWN_AFTER` for one: quick
    handlers run on a thread or two instead of fighting over the GIL on
    hundreds, blocking ones still get up to ``size``. A finished call's
    result is queued back, and the loop is woken once for all the results
    queued since it last looked (``call_soon_threadsafe`` writes a pipe).
    Threads are started as needed and are daemons: a stuck handler never
    holds the process at exit.
    """

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._calls: collections.deque[tuple[_ThreadCall, Callable[..., Any], tuple[Any, ...], asyncio.Future[Any],
                                             Serial | None]]
        self._calls = collections.deque()
        self._done: collections.deque[tuple[asyncio.Future[Any], bool, bool, Any, Serial | None]]
        self._done = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Semaphore(0)
        self._idle = 0
        self._threads = 0
        self._looking = False  # the loop was asked to collect results
        self._spawning = False  # a look at whether calls wait for a thread is scheduled
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], serial: Serial | None = None) -> Running:
        """Queue ``fn(*args)``; with ``serial``, run and collected through it."""
        loop = self._loop = asyncio.get_running_loop()
        future = loop.create_future()
        call = _ThreadCall()
        self._calls.append((call, fn, args, future, serial))
        start = later = False
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._wake.release()
            elif self._threads == 0:
                self._threads = 1
                start = True
            elif self._threads < self.size and not self._spawning:
                self._spawning = later = True
        if start:
            self._start_thread()
        elif later:
            loop.call_later(SPAWN_AFTER, self._spawn_if_waiting)
        return Running(future, call)

    def _start_thread(self) -> None:
        threading.Thread(target=self._work, name=f"handler-{self._threads}", daemon=True).start()

    def _spawn_if_waiting(self) -> None:
        """Another thread, if calls still wait: they block (sleep, I/O) rather than compute."""
        with self._lock:
            self._spawning = False
            if not self._calls or self._idle or self._threads >= self.size or self._closed:
                return
            self._threads += 1
            again = self._spawning = len(self._calls) > 1 and self._threads < self.size
        self._start_thread()
        if again:
            asyncio.get_running_loop().call_later(SPAWN_AFTER, self._spawn_if_waiting)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for _ in range(self._idle):
                self._wake.release()
            self._idle = 0

    def _work(self) -> None:
        calls = self._calls
        while not self._closed:
            try:
                call, fn, args, future, serial = calls.popleft()
            except IndexError:
                with self._lock:
                    if self._closed:
                        return
                    if calls:
                        continue  # queued after we looked: no wake-up will come for it
                    self._idle += 1
                self._wake.acquire()
                continue
            ran = not future.done()  # else cancelled before it started
            if ran:
                try:
                    value, ok = (call.run(fn, args) if serial is None else serial.run(call, fn, args)), True
                except BaseException as exc:  # handed to the awaiting task, whatever it is
                    value, ok = exc, False
            elif serial is None:
                continue
            else:
                value, ok = None, False
            self._done.append((future, ran, ok, value, serial))
            with self._lock:
                wake, self._looking = not self._looking, True
            if wake and self._loop is not None:
                try:
                    self._loop.call_soon_threadsafe(self._collect)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    return

    def _collect(self) -> None:
        with self._lock:
            self._looking = False
        done = self._done
        while done:
            future, ran, ok, value, serial = done.popleft()
            if serial is not None:
                ok, value = serial.collected(ran, ok, value)
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


class _ThreadCall:
    """A sync handler call on a pool thread, which can be interrupted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ident: int | None = None
        self._injected = False
        self.started: float | None = None  # time.monotonic() when the call began

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        with self._lock:
            self._ident = threading.get_ident()
            self.started = time.monotonic()
        try:
            return fn(*args)
        finally:
            with self._lock:
                if self._injected:
                    # Withdraw an exception not raised yet, so it cannot fire
                    # in the next handler this thread runs.
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._ident), None)
                self._ident = None

    def interrupt(self, exc_type: type[BaseException]) -> bool:
        with self._lock:
            if self._ident is None or self._injected:
                return False
            self._injected = True
            return ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._ident), ctypes.py_object(exc_type)) == 1


class Running:
    """A handler call in progress.

    Attributes:
        future: completes with the handler's result or exception.
    """

    def __init__(self, future: asyncio.Future[Any], thread: _ThreadCall | None) -> None:
        self.future = future
        self._thread = thread
        self.interrupted = False
        self._started = time.monotonic() if thread is None else None

    @property
    def started(self) -> float | None:
        """``time.monotonic()`` when the handler began (``None``: a thread call still queued)."""
        return self._started if self._thread is None else self._thread.started

    @property
    def in_thread(self) -> bool:
        """A sync handler on a pool thread (it cannot be cancelled, only interrupted)."""
        return self._thread is not None

    def interrupt(self, exc_type: type[BaseException]) -> None:
        """Make the handler stop with ``exc_type`` (async: cancel it instead)."""
        self.interrupted = True
        if self._thread is None:
            self.future.cancel()
        else:
            self._thread.interrupt(exc_type)


class HandlerCall:
    """The last link of a queue pool's chain: run the handler on the delivery's payload.

    Args:
        handler: the pool's handler.
        worker_id: the slot id (``ctx.worker`` and the result's ``worker``).
        state: ``ctx.state`` (the agent's state dict of a stateful pool).
        variables: ``ctx.variables``.
    """

    def __init__(self, handler: Handler, worker_id: str, state: dict[str, Any], variables: Mapping[str, Any]) -> None:
        self.handler = handler
        self.worker_id = worker_id
        self.state = state
        self.variables = variables
        self.log = logging.getLogger(f"foundation.worker.{worker_id}")

    async def start(self) -> None:
        """Nothing to start (the market step has a contractor to start)."""

    def stopping(self) -> None:
        """Nothing to tell."""

    async def close(self) -> None:
        """Nothing to stop."""

    async def __call__(self, d: Delivery, call_next: None = None) -> Outcome:
        ctx = None
        if self.handler.wants_ctx:
            ctx = TaskContext(task_id=d.task_id, attempt=d.attempt, pool=d.pool, worker=self.worker_id,
                              state=self.state, log=self.log, headers=d.headers, variables=self.variables)
        t0 = time.perf_counter()
        serial = d.serial
        d.running = running = self.handler.start(d.payload, ctx, serial)
        try:
            result = await running.future
        except Exception as exc:
            d.seconds = time.perf_counter() - t0 if serial is None or serial.seconds is None else serial.seconds
            d.failure = exc
            raise
        if serial is not None:  # timed on the agent's thread, the body recorded with the state
            d.seconds = seconds = serial.seconds
            return Outcome("ok", result=result, handler_seconds=seconds, body=serial.body)
        d.seconds = seconds = time.perf_counter() - t0
        return Outcome("ok", result=result, handler_seconds=seconds, body=self.body(d, result, seconds))

    def body(self, d: Delivery, result: Any, seconds: float) -> dict[str, Any]:
        """The result body of a handler's return value."""
        return result_body(task_id=d.task_id, pool=d.pool, worker=self.worker_id, attempt=d.attempt,
                           duration_ms=seconds * 1000, result=result)
