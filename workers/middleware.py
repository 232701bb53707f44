"""The middleware chain a delivery runs through, in the manner of dramatiq.

Every link has one signature::

    async def __call__(self, delivery: Delivery, call_next: Next) -> Outcome

A middleware does its work around ``await call_next(delivery)``: it may
return an :class:`~workers.delivery.Outcome` without calling it (a duplicate,
a bad body), catch what it raises (a handler error becomes a retry), or
wait before it (a quota). The last link has the same signature and is given
``call_next=None``: it runs the handler, or, for ``dispatch = "market"``,
the market step.

The order, outermost first (:func:`workers.consumer.Worker` builds it):

1. the middleware given to the worker — in a worker process,
   :class:`~workers.metrics.MetricsMiddleware` (counts every outcome);
   they see the outcome once settled;
2. :class:`~workers.settling.Settling` — stores the outcome's result,
   then acks or naks;
3. :class:`~workers.retries.DeadLettering` — decodes the body (a bad one
   goes to the DLQ at once) and turns an exception from below into a nak
   with backoff, or, on the last attempt, a dead letter;
4. :class:`~workers.suspects.SuspectIsolation` — a redelivery whose worker
   died waits its backoff and runs alone;
5. :class:`Gate` — the quota gate of :mod:`workers.agent`: the pool's cluster-wide rate and
   concurrency (when configured);
6. :class:`~workers.stateful.StateTransaction` — ``ctx.state`` applied
   effectively once (stateful pools);
7. :class:`~workers.timelimits.TimeLimits` — soft and hard limits (when
   configured);
8. the last link: :class:`~workers.handler.HandlerCall`, or
   :class:`~workers.market.MarketStep`.

Time limits sit next to the handler so that waiting for the quota or for
the agent's turn never counts against them (the README's rule; a call
queued for a thread is not charged its wait either).

Containment: an exception raised by a middleware travels up the chain like
a handler's; :class:`~workers.retries.DeadLettering` logs it (once, with
its traceback) and turns it into a retry or a dead letter; one raised above
it is caught by the consume loop, logged, and the task naked for a retry
(unless it was settled already). No exception loses a task.

Observers: a middleware may instead override :meth:`Middleware.before_task`
and :meth:`Middleware.after_task` (which must not raise); the default
``__call__`` calls them around the rest of the chain.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from workers.delivery import Delivery, Outcome

Next = Callable[[Delivery], Awaitable[Outcome]]
Link = Callable[..., Awaitable[Outcome]]  # (delivery, call_next) -> Outcome


class Middleware:
    """Base class of a link of the chain; see the module docstring."""

    async def __call__(self, delivery: Delivery, call_next: Next) -> Outcome:
        self.before_task(delivery)
        try:
            outcome = await call_next(delivery)
        except asyncio.CancelledError:
            self.after_task(delivery, Outcome("abandoned", error=None))
            raise
        except Exception as exc:
            self.after_task(delivery, Outcome("retry", error=exc))
            raise
        self.after_task(delivery, outcome)
        return outcome

    def before_task(self, task: Delivery) -> None:
        """Called before the rest of the chain runs."""

    def after_task(self, task: Delivery, outcome: Outcome) -> None:
        """Called with the outcome of the rest of the chain."""


class Gate:
    """A middleware entering ``gate()`` around the rest of the chain (the quota gate:
    it may wait for the pool's cluster-wide budget, and a wait is not an attempt)."""

    def __init__(self, gate: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
        self.gate = gate

    async def __call__(self, delivery: Delivery, call_next: Next) -> Outcome:
        async with self.gate():
            return await call_next(delivery)


def chain(links: Sequence[Link | None], last: Link) -> Next:
    """One callable running ``links`` in order around ``last`` (``None`` links are left out)."""
    call: Any = functools.partial(last, call_next=None)
    for link in reversed([m for m in links if m is not None]):
        call = functools.partial(link, call_next=call)
    return call
