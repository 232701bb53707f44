"""Named exit codes of a worker process; the supervisor acts on them."""

from __future__ import annotations

EXIT_OK = 0  # drained after SIGTERM, or finished
EXIT_ERROR = 1  # an unexpected exception escaped the worker loop
EXIT_NATS_UNAVAILABLE = 69  # EX_UNAVAILABLE: could not reach NATS at start
EXIT_HANDLER_IMPORT = 78  # EX_CONFIG: the handler cannot be imported; restarting will not help
EXIT_RECYCLE = 100  # asked to be replaced (task count, age, quota): restart, not a crash

NAMES = {
    EXIT_OK: "ok",
    EXIT_ERROR: "error",
    EXIT_NATS_UNAVAILABLE: "nats-unavailable",
    EXIT_HANDLER_IMPORT: "handler-import",
    EXIT_RECYCLE: "recycle",
}


def describe(code: int | None) -> str:
    """``"exit 78 (handler-import)"`` or ``"signal SIGKILL"``."""
    import signal

    if code is None:
        return "running"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    name = NAMES.get(code)
    return f"exit {code} ({name})" if name else f"exit {code}"
