"""Coordination as conversations over NATS subjects and KV buckets.

Usable from any process (workers, the supervisor, tools); nothing here imports
``workers`` or ``supervisor``. Each module opens with its message sequence and
the invariants its tests check. Import what you use from its module; this
package does not import them all, so a worker pays only for the protocols it
runs.

==========================  ===================================================
``protocols.registry``      the agent registry: KV-backed entries with TTL,
                            a local indexed cache, queries, a JSON endpoint
``protocols.quota``         cluster-wide rate and concurrency budgets, granted
                            as leases by an elected per-pool service
``protocols.lease``         KV compare-and-set lease with TTL and fencing terms
``protocols.election``      leader election on the lease, with watchers
``protocols.lock``          ``async with lock(kv, name)``, fencing tokens
``protocols.barrier``       N-party reusable barrier with timeouts
``protocols.consensus``     quorum votes by scatter-gather, stored decisions
``protocols.variables``     typed shared parameters changed only by agreement
``protocols.bft``           Byzantine agreement (Tendermint, Ed25519) with
                            certificates, and its simulation harness
``protocols.market``        Contract Net, auctions with exact rules, reputation
==========================  ===================================================
"""

__all__ = [
    "barrier", "bft", "consensus", "election", "lease", "lock", "market", "quota", "registry", "variables",
]
