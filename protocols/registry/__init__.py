"""The agent registry: who is alive, where, doing what — readable in microseconds.

Message sequence (all through the ``registry`` KV bucket, key = agent id):

1. A worker, once ready, ``register``\\ s its entry (put with a per-key TTL).
2. It ``heartbeat``\\ s every ``ttl/3`` s with status and load (CAS rewrite, TTL refreshed).
3. On exit — its own, or noticed by its supervisor — the entry is deleted
   (``unregister``, checked against the exited pid so a respawned slot's entry
   survives).
4. If a whole node dies, nobody deletes its entries: their TTL runs out and the
   server writes an expiry marker.
5. Every process keeps a cache fed by a watch of the bucket (current values
   first, then every put, delete and expiry), indexed by capability, pool,
   node and status. All reads are local.
6. Clients in any language ask the ``registry`` endpoint of the ``foundation``
   micro service (JSON, see :mod:`protocols.registry.service`).

Invariants the tests check: a cache equals the bucket once its watch has
caught up; entries of a registry that stops heartbeating vanish from every
cache after the TTL; a heartbeat never overwrites another process's entry;
both backends pass one contract suite.
"""

from protocols.registry.backend import BackendWatch, Change, ChangeKind, RegistryBackend
from protocols.registry.cache import ChangeStream, Event, RegistryCache
from protocols.registry.entry import ACCEPTING, Entry, Load, Status
from protocols.registry.errors import (
    EntryExistsError,
    InvalidEntryError,
    InvalidQueryError,
    NotRegisteredError,
    RegistrationTakenError,
    RegistryClosedError,
    RegistryError,
    RegistryUnavailableError,
    RevisionMismatchError,
)
from protocols.registry.kv import KVBackend
from protocols.registry.memory import MemoryBackend
from protocols.registry.query import OPERATORS, Condition, compile_query
from protocols.registry.registry import DEFAULT_TTL, Registry, open_registry
from protocols.registry.service import QUERY_SUBJECT, handle_query, query_endpoint, serve_registry_queries

__all__ = [
    "ACCEPTING", "DEFAULT_TTL", "OPERATORS", "QUERY_SUBJECT", "BackendWatch", "Change", "ChangeKind",
    "ChangeStream", "Condition", "Entry", "EntryExistsError", "Event", "InvalidEntryError", "InvalidQueryError",
    "KVBackend", "Load", "MemoryBackend", "NotRegisteredError", "RegistrationTakenError", "Registry",
    "RegistryBackend", "RegistryCache", "RegistryClosedError", "RegistryError", "RegistryUnavailableError",
    "RevisionMismatchError", "Status", "compile_query", "handle_query", "open_registry", "query_endpoint",
    "serve_registry_queries",
]
