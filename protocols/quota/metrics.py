"""Quota metrics. The supervisor sets up multiprocess collection; we only define them."""

from __future__ import annotations

from prometheus_client import Counter

TOKENS_GRANTED = Counter(
    "foundation_quota_tokens_granted_total", "Rate tokens granted by the pool's quota service.", ["pool"]
)
DENIALS = Counter(
    "foundation_quota_denials_total",
    "Requests for rate tokens or concurrency slots that got less than asked (budget exhausted).",
    ["pool", "kind"],
)
LEADER_CHANGES = Counter(
    "foundation_quota_leader_changes_total", "A candidate quota service took the lead of its pool's budget.", ["pool"]
)
BREACHES = Counter(
    "foundation_quota_breaches_total",
    "Quota breaches: resource limits of a worker (rss, cpu, fds; the supervisor's) and cluster-wide "
    "budgets (rate: a ledger window over budget; concurrency: more slots held than allowed, or a slot "
    "used past its lease because it could not be renewed).",
    ["pool", "kind"],
)
