"""The registry's query endpoint: the same reads as JSON, for any NATS client.

Every node mounts it on its ``foundation`` micro service (queue group, so one
node answers each request); all nodes hold the same entries, so any answer
is as good as another. Request and reply are JSON objects:

Request (``v`` optional, currently 1)::

    {"op": "lookup", "id": "echo.0"}
    {"op": "find", "capability": "echo", "pool": "echo", "node": "a", "status": "ready"}
    {"op": "query", "where": [["metadata.gpu.mem", "gte", 16], ["status", "in", ["ready", "busy"]]],
     "capability": "embed", "limit": 10}
    {"op": "least_loaded", "capability": "echo", "n": 3}
    {"op": "ls"}                                   # every entry; same filters as find

``find`` and ``query`` accept the criteria ``capability``, ``pool``,
``node``, ``status`` (all optional) and ``limit``.

Reply::

    {"v": 1, "ok": true, "count": 2, "entries": [<entry>, ...]}
    {"v": 1, "ok": false, "error": "unknown query operator 'like'; use one of [...]"}

Entries have the JSON form of :mod:`protocols.registry.entry`. ``find``,
``query`` and ``ls`` list them by id; ``least_loaded`` lists the least loaded
first; ``lookup`` gives zero or one entry.
"""

from __future__ import annotations

import logging
from typing import Any

from broker import Connection, Endpoint, Service, ServiceRequest, codec, reply_allowed, request_reply, start_service, subjects
from config.errors import FoundationError
from protocols.registry.entry import Entry
from protocols.registry.errors import InvalidQueryError
from protocols.registry.registry import Registry

log = logging.getLogger("foundation.registry")

QUERY_VERSION = 1
QUERY_SUBJECT = "foundation.registry.query"
"""Where the endpoint listens by default."""
ENDPOINT_NAME = "registry"
MAX_REQUEST_BYTES = 64 * 1024

_CRITERIA = ("capability", "pool", "node", "status")


def _criteria(request: dict[str, Any]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key in _CRITERIA:
        value = request.get(key)
        if value is not None and not isinstance(value, str):
            raise InvalidQueryError(f"{key!r} must be a string, got {type(value).__name__}")
        out[key] = value
    return out


def _count(request: dict[str, Any], key: str, default: int | None) -> int | None:
    value = request.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidQueryError(f"{key!r} must be a non-negative integer, got {value!r}")
    return value


def _answer(registry: Registry, request: Any) -> list[Entry]:
    if not isinstance(request, dict):
        raise InvalidQueryError("a registry request must be a JSON object with an 'op'")
    op = request.get("op")
    if op == "lookup":
        id = request.get("id")
        if not isinstance(id, str):
            raise InvalidQueryError("'lookup' needs a string 'id'")
        found = registry.lookup(id)
        return [] if found is None else [found]
    if op == "least_loaded":
        capability = request.get("capability")
        if not isinstance(capability, str):
            raise InvalidQueryError("'least_loaded' needs a string 'capability'")
        return registry.least_loaded(capability, _count(request, "n", 1) or 0)
    if op in ("find", "ls"):
        entries = registry.find(**_criteria(request))
    elif op == "query":
        where = request.get("where")
        if not isinstance(where, list):
            raise InvalidQueryError("'query' needs 'where': a list of [path, op, value] triples")
        entries = registry.query(where, **_criteria(request))
    else:
        raise InvalidQueryError(f"unknown registry request op {op!r}; use lookup, find, query, least_loaded or ls")
    entries.sort(key=lambda e: e.id)
    limit = _count(request, "limit", None)
    return entries if limit is None else entries[:limit]


async def handle_query(registry: Registry, request_json: bytes) -> bytes:
    """Answer one JSON request from the local cache (see the module docstring).

    Never raises for a bad request: the reply says what was wrong.
    """
    try:
        entries = _answer(registry, codec.decode(request_json, MAX_REQUEST_BYTES))
    except FoundationError as exc:
        return codec.encode({"v": QUERY_VERSION, "ok": False, "error": str(exc)})
    except Exception as exc:  # a bug here must not leave a foreign client waiting for a timeout
        log.exception("registry query failed")
        return codec.encode({"v": QUERY_VERSION, "ok": False, "error": f"internal error: {exc!r}"})
    return codec.encode({"v": QUERY_VERSION, "ok": True, "count": len(entries),
                         "entries": [e.to_dict() for e in entries]})


def query_endpoint(registry: Registry, subject: str = QUERY_SUBJECT) -> Endpoint:
    """The endpoint to add to the node's ``foundation`` micro service.

    ``await service.add_endpoint(query_endpoint(registry))``.
    """

    async def handler(request: ServiceRequest) -> None:
        if reply_allowed(request_reply(request), "registry query"):
            await request.respond(await handle_query(registry, request.data))

    return Endpoint(name=ENDPOINT_NAME, subject=subject, handler=handler)


async def serve_registry_queries(nc: Connection, registry: Registry, subject: str = QUERY_SUBJECT,
                                 version: str = "0.1.0") -> Service:
    """Run the endpoint on its own ``foundation`` micro service; stop it with ``await svc.stop()``.

    For processes that do not run the node's control service (tools, tests).
    """
    service = await start_service(nc, name=subjects.SERVICE_NAME, version=version,
                                description="Foundation node services")
    await service.add_endpoint(query_endpoint(registry, subject))
    return service
