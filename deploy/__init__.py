"""Deployment files: systemd units (``deploy/systemd``).

* ``foundation.service`` — one node per host, ``Type=notify`` with a
  watchdog; its limits are derived from the shipped ``config/foundation.toml``
  (see the comments in the unit, and ``tests/supervisor/test_systemd.py``).
* ``nats-server.service`` — a standalone NATS server for hosts that share a
  cluster instead of running the embedded one.
"""

from __future__ import annotations

from pathlib import Path

from config.errors import FoundationError

SYSTEMD_DIR = Path(__file__).resolve().parent / "systemd"


def systemd_unit(name: str) -> Path:
    """Path of a shipped unit file, e.g. ``systemd_unit("foundation.service")``."""
    path = SYSTEMD_DIR / name
    if not path.is_file():
        raise FoundationError(f"no unit {name!r} in {SYSTEMD_DIR}; units: {', '.join(p.name for p in SYSTEMD_DIR.glob('*.service'))}")
    return path


__all__ = ["SYSTEMD_DIR", "systemd_unit"]
