"""The one exception hierarchy of Foundation.

It lives in ``config`` because ``config`` is the leaf of the import graph:
every other layer may import it, and it imports nothing of ours.
"""

from __future__ import annotations


class FoundationError(Exception):
    """Root of every error Foundation raises on purpose."""


class ConfigError(FoundationError):
    """The configuration is invalid.

    Attributes:
        key: dotted path of the offending key (``pools.echo.size``), or ``""``
            when the whole file is at fault.
        why: what is wrong and what to do about it.
    """

    def __init__(self, key: str, why: str) -> None:
        self.key = key
        self.why = why
        super().__init__(f"{key}: {why}" if key else why)


class BrokerError(FoundationError):
    """Talking to NATS failed."""


class SupervisorError(FoundationError):
    """The supervision tree could not do what it was asked."""


class ProtocolError(FoundationError):
    """A coordination protocol could not complete or received bad input."""


class WorkerError(FoundationError):
    """A worker could not load or run its handler."""
