"""Coordination metrics, counted in the process that runs the round.

In a node every process (supervisor and workers) writes multiprocess value
files that the root supervisor's ``/metrics`` adds up; elsewhere (a script,
the CLI) the figures stay in that process. Nothing here does I/O: a round
costs one counter increment and one histogram observation.

==========================================  ===================  =====================================
metric                                      labels               meaning
==========================================  ===================  =====================================
``foundation_coord_rounds_total``           protocol, outcome    rounds finished, by how they ended
``foundation_coord_round_seconds``          protocol             how long a round took
``foundation_bft_round_changes_total``      cause                Byzantine rounds started after round 0
``foundation_bft_rejected_total``           reason               Byzantine messages refused
``foundation_auctions_cleared_total``       kind                 auctions cleared (sealed-bid, Contract Net…)
``foundation_auction_seconds``              kind                 time to clear an auction
==========================================  ===================  =====================================

A process outside any node (the CLI, a script) keeps its finished rounds
and auctions in a short list; :func:`forward` publishes them on
``foundation.metrics.rounds`` and one node (queue group ``foundation-metrics``)
counts them with :func:`count_forwarded`, so rounds started from the CLI show
in the cluster's figures too.

Protocols (``protocol``): consensus, election, lock, barrier, bft,
contract_net. Outcomes: consensus ``accepted``/``rejected``/``timeout``;
election ``won``; lock ``acquired``; barrier ``passed``; bft ``decided``;
contract_net ``awarded``; any round ``timeout`` or ``error`` when it raised.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import Counter, Histogram

from broker import subjects

PROTOCOL_OUTCOMES = {
    "consensus": ("accepted", "rejected", "timeout", "error"),
    "election": ("won", "timeout", "error"),
    "lock": ("acquired", "timeout", "error"),
    "barrier": ("passed", "timeout", "error"),
    "bft": ("decided", "timeout", "error"),
    "contract_net": ("awarded", "timeout", "error"),
}
AUCTION_KINDS = ("first_price", "vickrey", "gsp", "combinatorial", "contract_net")
_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_AUCTION_SECONDS = (0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30)

ROUNDS = Counter("foundation_coord_rounds_total", "Coordination rounds finished, by protocol and outcome.", ["protocol", "outcome"])
ROUND_SECONDS = Histogram("foundation_coord_round_seconds", "Duration of a coordination round.", ["protocol"], buckets=_SECONDS)
BFT_ROUND_CHANGES = Counter(
    "foundation_bft_round_changes_total",
    "Byzantine agreement rounds started after the first (view changes), by cause: a precommit timeout, or f+1 members seen in a later round.",
    ["cause"],
)
BFT_REJECTED = Counter("foundation_bft_rejected_total", "Byzantine agreement messages refused, by reason.", ["reason"])
AUCTIONS = Counter("foundation_auctions_cleared_total", "Auctions cleared, by kind.", ["kind"])
AUCTION_SECONDS = Histogram("foundation_auction_seconds", "Time to clear an auction.", ["kind"], buckets=_AUCTION_SECONDS)

F = TypeVar("F", bound=Callable[..., Any])

FORWARD_SUBJECT = subjects.METRICS_ROUNDS
FORWARD_QUEUE = "foundation-metrics"
_MAX_UNREPORTED = 1000  # rounds kept for forward() by a process outside a node; older ones are dropped
_unreported: list[list[Any]] = []  # ["round", protocol, outcome, seconds] or ["auction", kind, "", seconds]
log = logging.getLogger("foundation.protocols.metrics")


def _in_node() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def _keep(kind: str, a: str, b: str, seconds: float | None) -> None:
    if not _in_node():
        if len(_unreported) >= _MAX_UNREPORTED:
            del _unreported[0]
        _unreported.append([kind, a, b, seconds])


async def forward(nc: Any) -> int:
    """Publish the rounds this process (outside a node) finished, for a node to count; how many.

    Best effort: a failed publish loses only figures, never a round.
    """
    if not _unreported:
        return 0
    batch = list(_unreported)
    try:
        await nc.publish(FORWARD_SUBJECT, json.dumps(batch).encode())
        await nc.flush(timeout=2)
    except Exception as exc:  # figures only; the round itself is done
        log.debug("forwarding %d round(s) failed: %r", len(batch), exc)
        return 0
    del _unreported[: len(batch)]
    return len(batch)


def count_forwarded(data: bytes) -> int:
    """Count rounds forwarded by another process; malformed entries are skipped. How many counted."""
    try:
        batch = json.loads(data)
    except ValueError:
        return 0
    counted = 0
    for entry in batch[:_MAX_UNREPORTED] if isinstance(batch, list) else []:
        try:
            kind, a, b, seconds = entry
            seconds = None if seconds is None else float(seconds)
        except (TypeError, ValueError):
            continue
        if seconds is not None and not 0.0 <= seconds < 86400.0:  # also refuses NaN
            continue
        if kind == "round" and b in PROTOCOL_OUTCOMES.get(a, ()):
            ROUNDS.labels(a, b).inc()
            if seconds is not None:
                ROUND_SECONDS.labels(a).observe(seconds)
        elif kind == "auction" and a in AUCTION_KINDS and seconds is not None:
            AUCTIONS.labels(a).inc()
            AUCTION_SECONDS.labels(a).observe(seconds)
        else:
            continue
        counted += 1
    return counted


def declare() -> None:
    """Create every known label set at 0, so a dashboard never shows "no data"."""
    from protocols.bft.auth import REASONS  # the bft package imports this module

    for protocol, outcomes in PROTOCOL_OUTCOMES.items():
        ROUND_SECONDS.labels(protocol)
        for outcome in outcomes:
            ROUNDS.labels(protocol, outcome)
    for kind in AUCTION_KINDS:
        AUCTIONS.labels(kind)
        AUCTION_SECONDS.labels(kind)
    for reason in REASONS:
        BFT_REJECTED.labels(reason)
    for cause in ("timeout", "skip"):
        BFT_ROUND_CHANGES.labels(cause)


def _failure(exc: BaseException) -> str:
    return "timeout" if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__ else "error"


def timed_round(protocol: str, outcome: str | Callable[[Any], str]) -> Callable[[F], F]:
    """Decorate a coroutine function that runs one round of ``protocol``.

    ``outcome`` names the outcome of a round that returned (or computes it
    from the return value); a round that raised counts as ``timeout`` or
    ``error``. A cancelled round is not counted: nobody saw it end.
    """

    def wrap(fn: Callable[..., Awaitable[Any]]) -> Any:
        @functools.wraps(fn)
        async def run(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                ROUNDS.labels(protocol, _failure(exc)).inc()
                _keep("round", protocol, _failure(exc), None)
                raise
            seconds = time.perf_counter() - started
            name = outcome(result) if callable(outcome) else outcome
            ROUND_SECONDS.labels(protocol).observe(seconds)
            ROUNDS.labels(protocol, name).inc()
            _keep("round", protocol, name, seconds)
            return result

        return run

    return wrap  # type: ignore[return-value]


def cleared(kind: str) -> Callable[[F], F]:
    """Decorate an auction's clearing function (plain or async): count and time each call that returns."""

    def wrap(fn: Callable[..., Any]) -> Any:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                result = await fn(*args, **kwargs)
                _cleared(kind, time.perf_counter() - started)
                return result

            return run_async

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result = fn(*args, **kwargs)
            _cleared(kind, time.perf_counter() - started)
            return result

        return run

    return wrap  # type: ignore[return-value]


def _cleared(kind: str, seconds: float) -> None:
    AUCTION_SECONDS.labels(kind).observe(seconds)
    AUCTIONS.labels(kind).inc()
    _keep("auction", kind, "", seconds)
