"""Imported by the fork server (and only there) before it forks any worker.

It first ties the fork server's life to the supervisor's: its children hold
the fork server's "alive" pipe open, so without a death signal a supervisor
killed with ``kill -9`` would leave the fork server and every worker behind.
With it, the supervisor's death kills the fork server, whose death kills
each child (they set ``PR_SET_PDEATHSIG`` too).

The supervisor lists the pools' handler modules in ``FOUNDATION_PRELOAD``.
Importing them here, once, means each forked worker starts with them loaded.
A module that fails to import is skipped: the worker that needs it imports it
again, fails, and reports the error to the supervisor, which is the one place
that knows what to do about it.
"""

from __future__ import annotations

import importlib
import os

from broker import die_with_parent

# The worker entry point and what it pulls in (nats, orjson, the consume loop).
import workers.process  # noqa: F401

ENV = "FOUNDATION_PRELOAD"  # set by supervisor.forkserver

die_with_parent()

failed: dict[str, str] = {}
for _name in filter(None, os.environ.get(ENV, "").split(",")):
    try:
        importlib.import_module(_name)
    except Exception as exc:  # user code: any error; reported by the worker later
        failed[_name] = f"{type(exc).__name__}: {exc}"
