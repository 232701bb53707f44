"""What a handler sees of the task it runs: ``ctx``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TaskContext:
    """Per-task context passed as the handler's second argument.

    Attributes:
        task_id: the task's id (its ``Nats-Msg-Id``, or ``TASKS:<seq>``).
        attempt: 1 for the first delivery, 2 for the first retry, …
        pool: the pool name.
        worker: the worker's slot id, ``<pool>.<n>``.
        state: the agent's state, a JSON-able dict owned by the slot.
        log: a logger named after the worker.
        headers: the task's NATS headers.
        variables: the shared variables, read-only and live: a change agreed
            anywhere shows here without a restart (:mod:`workers.agent`).
    """

    task_id: str
    attempt: int
    pool: str
    worker: str
    state: dict[str, Any]
    log: logging.Logger
    headers: dict[str, str] = field(default_factory=dict)
    variables: Mapping[str, Any] = field(default_factory=dict)
