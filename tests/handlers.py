"""Handlers used by the tests' worker processes (importable as ``tests.handlers``)."""

from __future__ import annotations

import asyncio
import os
from typing import Any


async def slow(payload: dict[str, Any]) -> dict[str, Any]:
    """Sleeps ``payload["seconds"]`` (simulated work), returns the payload."""
    await asyncio.sleep(float(payload.get("seconds", 0.05)))
    return payload


def crash_on(payload: dict[str, Any]) -> dict[str, Any]:
    """Kills its own process when ``payload["crash"]`` is true (a poison task)."""
    if payload.get("crash"):
        os._exit(13)
    return payload
