"""Errors of the quota protocol, named by condition."""

from __future__ import annotations

from config.errors import ProtocolError


class QuotaError(ProtocolError):
    """A quota operation could not complete."""


class QuotaUnavailableError(QuotaError):
    """No quota service answered in time (none elected yet, or NATS is unreachable)."""


class QuotaTimeoutError(QuotaError):
    """The budget stayed exhausted for longer than the caller was willing to wait."""


class LedgerConflictError(QuotaError):
    """A ledger record changed since it was read (another service wrote it)."""


class InvalidBudgetError(QuotaError):
    """A budget cannot be enforced as given."""
