"""systemd ``Type=notify`` support, spoken directly over ``$NOTIFY_SOCKET``.

The protocol is one datagram per message on a unix socket whose path systemd
passes in ``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace),
newline-separated ``KEY=VALUE`` assignments. No libsystemd needed.

What ``foundation up`` sends:

* ``READY=1`` (with ``STATUS=``) once the whole tree is up: every pool's
  workers bound to their consumers. The same message carries the node's
  addresses for programs that start it (:mod:`supervisor.harness`):
  ``X_FOUNDATION_NODE`` (its name), ``X_FOUNDATION_NATS`` (the NATS URL),
  ``X_FOUNDATION_MONITOR`` (the embedded server's monitoring URL, or empty)
  and ``X_FOUNDATION_METRICS`` (the ``/metrics`` URL, or empty); systemd
  ignores them;
* ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` from the main event loop, so a
  wedged loop stops the pings and systemd restarts the node;
* ``STATUS=`` with pool counts whenever they change;
* ``STOPPING=1`` when it starts to stop (a request, or the tree gave up).

Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("foundation.systemd")


class Notifier:
    """Sends sd_notify messages; silent when not run by systemd.

    Args:
        env: the environment to read (default ``os.environ``).
    """

    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ if env is None else env)
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if path.startswith("@"):
            self.address = b"\0" + path[1:].encode()
        elif path.startswith("/"):
            self.address = path
        self.watchdog_interval = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._last_status = ""

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """Send one message of ``KEY=VALUE`` lines; whether it was sent."""
        if self.address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            if self._sock is None:
                # Non-blocking: a reader that does not keep up must never stall
                # the event loop this is called from; the message is dropped.
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            self._sock.sendto(message, self.address)
        except OSError as exc:  # systemd gone or socket full: nothing to do about it here
            log.warning("sd_notify %s failed: %s", message.decode(errors="replace"), exc)
            return False
        return True

    def ready(self, status: str, **extra: str) -> bool:
        """``READY=1`` with ``STATUS=``; ``extra`` adds application fields (names start with ``X_``)."""
        self._last_status = status
        return self.send(READY=1, STATUS=status, **extra)

    def status(self, status: str) -> bool:
        """Send ``STATUS=`` if it changed since the last one."""
        if status == self._last_status:
            return False
        self._last_status = status
        return self.send(STATUS=status)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def stopping(self, status: str = "stopping") -> bool:
        self._last_status = status
        return self.send(STOPPING=1, STATUS=status)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval(env: dict[str, str]) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half the watchdog timeout, or None."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # the watchdog is meant for another process
    return int(usec) / 1e6 / 2
