"""Cluster-wide quotas: ``rate_per_s`` and ``max_concurrency`` shared by every worker of a pool.

Every node runs a :class:`QuotaService` candidate per limited pool; one wins
the ``election.quota.<pool>`` lease and answers requests on
``coord.quota.<pool>.service.request``. Workers use a :class:`QuotaClient`,
which holds small leases (a batch of tokens for the current window, a few
concurrency slots) so the task path rarely leaves the process. Every grant is
written to the ``quota`` KV ledger by compare-and-set before it is handed
out, which keeps each window within budget even while two services overlap
during a failover. See :mod:`protocols.quota.service` for the sequence and
invariants, :mod:`protocols.quota.wire` for the JSON messages.
"""

from protocols.quota.client import QuotaClient
from protocols.quota.errors import (
    InvalidBudgetError,
    LedgerConflictError,
    QuotaError,
    QuotaTimeoutError,
    QuotaUnavailableError,
)
from protocols.quota.ledger import QUOTA_BUCKET, Grant, Ledger, SlotTable, Window, window_index
from protocols.quota.metrics import BREACHES, DENIALS, TOKENS_GRANTED
from protocols.quota.service import Budget, QuotaService, open_quota_service
from protocols.quota.wire import BadQuotaRequestError, QuotaRequest, request_subject

__all__ = [
    "BREACHES", "DENIALS", "QUOTA_BUCKET", "TOKENS_GRANTED", "BadQuotaRequestError", "Budget", "Grant",
    "InvalidBudgetError", "Ledger", "LedgerConflictError", "QuotaClient", "QuotaError", "QuotaRequest",
    "QuotaService", "QuotaTimeoutError", "QuotaUnavailableError", "SlotTable", "Window", "open_quota_service",
    "request_subject", "window_index",
]
