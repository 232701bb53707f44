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
  view's own space (written by hand, or by a newer space), or a record of the
  wrong shape, is ignored with a warning naming the key, and the previous
  value is kept. Order is judged by the bucket's revisions, which only the
  server assigns, so a hand-written ``version`` cannot freeze a value.
* The watch restarts, with backoff, after any error; the restarted watch
  replays the latest value of every variable.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from broker import NATS_ERRORS, KeyValueBucket, bucket_connection, reconnects, watch_update
from protocols.variables.space import ParameterSpace, VariableError, VariableValidationError
from protocols.variables.store import Change, InvalidRecordError

log = logging.getLogger("foundation.protocols.variables")

WATCH_BACKOFF = (0.1, 5.0)  # first and longest pause before a failed watch is reopened

Listener = Callable[[Change], "Awaitable[None] | None"]


class VariableView:
    """Current values of a parameter space, kept up to date by a watch.

    Use ``async with VariableView(kv, space) as view:`` then ``view["name"]``.
    """

    def __init__(self, kv: KeyValueBucket, space: ParameterSpace) -> None:
        self.space = space
        self._kv = kv
        self._values: dict[str, Any] = space.defaults()
        self._versions: dict[str, int] = {name: 0 for name in self._values}
        self._revisions: dict[str, int] = {name: 0 for name in self._values}
        self._listeners: list[Listener] = []
        self._changed = asyncio.Condition()
        self._watcher: Any = None
        self._task: asyncio.Task[None] | None = None
        self._epoch = 0

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
        watcher = await self._watch()
        loaded = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._follow_forever(watcher, loaded), name="variables-view")
        await loaded

    async def _watch(self) -> Any:
        self._epoch = reconnects(bucket_connection(self._kv))
        try:
            self._watcher = await self._kv.watch("value.>")
        except NATS_ERRORS as exc:
            raise VariableError(f"cannot watch the variables bucket: {exc!r}; is NATS reachable?") from exc
        return self._watcher

    async def _follow_forever(self, watcher: Any, loaded: asyncio.Future[None]) -> None:
        pause, longest = WATCH_BACKOFF
        while True:
            if watcher is not None:
                try:
                    await self._follow(watcher, loaded)
                except StopAsyncIteration:
                    log.warning("variables: the watch ended; restarting it")
                except Exception as exc:  # the view's only feed: restart it whatever went wrong
                    log.warning("variables: the watch failed (%r); restarting it", exc)
                with contextlib.suppress(Exception):
                    await watcher.stop()
            await asyncio.sleep(pause)  # a backoff pause between reconnects, not a wait for an event
            pause = min(pause * 2, longest)
            try:
                watcher = await self._watch()
            except VariableError as exc:
                log.warning("variables: %s", exc)
                watcher = None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._watcher is not None:
            with contextlib.suppress(*NATS_ERRORS):
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

    async def _follow(self, watcher: Any, loaded: asyncio.Future[None]) -> None:
        nc, epoch = bucket_connection(self._kv), self._epoch
        while True:
            entry = await watch_update(watcher, nc, epoch)  # StaleWatchError after a reconnect
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
        if name not in self.space:
            return  # a variable of a newer space; not ours to show
        if revision and revision <= self._revisions.get(name, 0):
            return  # a replay (after a watch restart) of what we already applied
        try:
            change = Change.from_entry(data, revision)
            value = self.space.validate(name, change.value)
        except (VariableValidationError, InvalidRecordError) as exc:
            log.warning("variables: ignoring the record under key 'value.%s' at revision %d: %s", name, revision, exc)
            return
        self._values[name] = value
        self._versions[name] = change.version
        self._revisions[name] = revision
        async with self._changed:
            self._changed.notify_all()
        for listener in self._listeners:
            try:
                result = listener(change)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # a broken listener must not stop the view
                log.exception("variables: listener failed on %s", name)
