"""NATS micro services: named endpoints that answer requests.

A node runs one ``foundation`` service (:mod:`supervisor.control`) with its
control endpoints and the registry's query endpoint
(:mod:`protocols.registry.service`). The service framework answers
``$SRV.PING``/``INFO``/``STATS``, sends a :class:`ServiceError` raised by a
handler as the ``Nats-Service-Error`` headers, and counts it in the stats.
"""

from __future__ import annotations

from typing import Any

from nats.micro import add_service
from nats.micro.request import Request, ServiceError
from nats.micro.service import EndpointConfig, Service

from broker.connection import Connection

ServiceRequest = Request
"""One request to an endpoint: ``.subject``, ``.data``, ``respond``, ``respond_error``."""

Endpoint = EndpointConfig
"""An endpoint to add to a service: ``name``, ``subject``, ``handler``, ``queue_group``."""

__all__ = ["Endpoint", "Service", "ServiceError", "ServiceRequest", "start_service"]


async def start_service(nc: Connection, *, name: str, version: str, description: str,
                        metadata: dict[str, str] | None = None) -> Service:
    """Register a micro service on ``nc``; add endpoints with ``await service.add_endpoint(...)``,
    stop it with ``await service.stop()``."""
    options: dict[str, Any] = {"name": name, "version": version, "description": description}
    if metadata is not None:
        options["metadata"] = metadata
    return await add_service(nc, **options)
