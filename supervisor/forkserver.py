"""The fork server workers are forked from.

Forking the supervisor itself would copy a process that runs an event loop
and threads (the metrics server), which is unsafe. Instead a fresh
interpreter is started once (``multiprocess``'s fork server, launched by
fork+exec), it imports the handler modules, and every worker is forked from
that clean, single-threaded, pre-warmed process. Children of the fork server
set ``PR_SET_PDEATHSIG``; the fork server exits when the supervisor does, so a
``kill -9`` of the supervisor takes every worker with it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import multiprocess

# Read by workers.preload inside the fork server; not imported from there
# because importing that module has effects meant for the fork server only.
PRELOAD_ENV = "FOUNDATION_PRELOAD"
MAIN_ENV = "FOUNDATION_FORK_MAIN"  # read by supervisor.forkmain

_context: Any = None


def start_fork_server(modules: Iterable[str]) -> Any:
    """Start (once) the fork server with ``modules`` preloaded; returns the context.

    Must run before any worker is started. Later calls return the same
    context; their modules are imported by each worker on its own instead.
    """
    global _context
    if _context is None:
        os.environ[PRELOAD_ENV] = ",".join(sorted(set(modules)))
        ctx = multiprocess.get_context("forkserver")
        main = _main_path()
        if main:
            os.environ[MAIN_ENV] = main
        # supervisor.forkmain first: without it each child would run the main
        # script (the ``foundation`` entry point, all it imports) on every fork.
        ctx.set_forkserver_preload(["supervisor.forkmain", "workers.preload"])
        from multiprocess import forkserver

        forkserver.ensure_running()
        _context = ctx
    return _context


def _main_path() -> str | None:
    """The main script's path exactly as a fork request will carry it, if any."""
    import sys

    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    path = getattr(main, "__file__", None)
    if spec is not None or not path:
        return None  # run as a module (python -m ...): children do not re-run it
    from multiprocess import process

    if not os.path.isabs(path) and process.ORIGINAL_DIR is not None:
        path = os.path.join(process.ORIGINAL_DIR, path)
    return os.path.normpath(path)


def fork_context() -> Any:
    """The fork server context; starts one with no extra preload if needed."""
    return _context if _context is not None else start_fork_server(())


# What every worker imports on its way to ready: preloading it in the fork
# server keeps it off each restart's critical path.
WORKER_MODULES = ("workers.process", "workers.metrics", "workers.agent", "workers.market")


def worker_preload(handlers: Iterable[str]) -> list[str]:
    """Modules to preload for workers running ``handlers`` (``module:callable`` specs)."""
    return [*WORKER_MODULES, *handler_modules(handlers)]


def handler_modules(handlers: Iterable[str]) -> list[str]:
    """Module names of ``module:callable`` handler specs."""
    return sorted({h.partition(":")[0] for h in handlers})
