"""A live, local view of the shared variables, fed by a KV watch.

Message sequence::

    view  <- KV  watch value.>     the latest value of every variable, then every applied change

Every process that needs the parameters (each worker) holds one view; reads
are dictionary lookups, and a change applied anywhere reaches every view
without a restart.

Invariants (tests/protocols/test_variables.py, with several processes):

* After :meth:`VariableView.start` returns, every variable has its latest
  applied value (or its default if none was ever written).
* Versions seen by a view only increase; a value that does not fit the
  view's own space (written by hand, or by a newer space) is ignored with a
  warning, and the previous value is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from nats.js.kv import KeyValue

from broker import codec
from protocols.variables.space import ParameterSpace, VariableError, VariableValidationError
from protocols.variables.store import Change

log = logging.getLogger("foundation.protocols.variables")

Listener = Callable[[Change], "Awaitable[None] | None"]


class VariableView:
    """Current values of a parameter space, kept up to date by a watch.

    Use ``async with VariableView(kv, space) as view:`` then ``view["name"]``.
    """

    def __init__(self, kv: KeyValue, space: ParameterSpace) -> None:
        self.space = space
        self._kv = kv
        self._values: dict[str, Any] = space.defaults()
        self._versions: dict[str, int] = {name: 0 for name in self._values}
        self._listeners: list[Listener] = []
        self._changed = asyncio.Condition()
        self._watcher: Any = None
        self._task: asyncio.Task[None] | None = None

    def __getitem__(self, name: str) -> Any:
        self.space[name]  # a clear error for an unknown name
        return self._values[name]

    def values(self) -> dict[str, Any]:
        """A snapshot of every current value."""
        return dict(self._values)

    def version(self, name: str) -> int:
        return self._versions[name]

    def on_change(self, listener: Listener) -> None:
        """Call ``listener(change)`` (sync or async) after each applied change."""
        self._listeners.append(listener)

    async def start(self) -> None:
        """Start watching; returns once the current values are loaded."""
        try:
            self._watcher = await self._kv.watch("value.>")
        except nats.errors.Error as exc:
            raise VariableError(f"cannot watch the variables bucket: {exc!r}; is NATS reachable?") from exc
        loaded = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._follow(loaded), name="variables-view")
        await loaded

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._watcher is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._watcher.stop()
            self._watcher = None

    async def __aenter__(self) -> VariableView:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_for(self, name: str, predicate: Callable[[Any], bool], timeout: float | None = None) -> Any:
        """Wait until ``predicate(view[name])`` holds; returns the value.

        Raises:
            asyncio.TimeoutError: not within ``timeout`` seconds.
        """
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self[name])), timeout)
            return self[name]

    async def _follow(self, loaded: asyncio.Future[None]) -> None:
        async for entry in self._watcher:
            if entry is None:  # the watch's "caught up" marker
                if not loaded.done():
                    loaded.set_result(None)
                continue
            if entry.operation is not None or not entry.value:
                continue  # a deleted value: keep the last one rather than flap to the default
            await self._apply(entry.key.removeprefix("value."), entry.value, entry.revision or 0)
            if not loaded.done() and not entry.delta:
                loaded.set_result(None)

    async def _apply(self, name: str, data: bytes, revision: int) -> None:
        try:
            change = Change.from_entry(data, revision)
            if name not in self.space:
                return  # a variable of a newer space; not ours to show
            value = self.space.validate(name, change.value)
        except (VariableValidationError, codec.CodecError, TypeError) as exc:
            log.warning("variables: ignoring stored value of %r at revision %d: %s", name, revision, exc)
            return
        if change.version < self._versions.get(name, 0):
            return
        self._values[name] = value
        self._versions[name] = change.version
        async with self._changed:
            self._changed.notify_all()
        for listener in self._listeners:
            try:
                result = listener(change)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # a broken listener must not stop the view
                log.exception("variables: listener failed on %s", name)
