"""``foundation dashboards [--check]``: regenerate the Grafana dashboards (as ``make dashboards``).

With ``--json``: ``{"wrote": [paths]}``, or with ``--check`` ``{"stale": [paths]}``
(exit 1 when that list is not empty).
"""

from __future__ import annotations

import argparse
from typing import Any

from config.errors import FoundationError
from supervisor.cli.output import add_json_option, emit


def register(sub: Any) -> None:
    p = sub.add_parser("dashboards", help="regenerate deploy/grafana/dashboards/*.json from deploy/grafana/*.py")
    p.add_argument("--check", action="store_true", help="only check: exit 1 if a committed dashboard is stale")
    add_json_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:  # the generator needs grafana-foundation-sdk, a development dependency
        from deploy.grafana.__main__ import main
        from deploy.grafana.generate import DASHBOARD_DIR, stale, write
    except ImportError as exc:
        raise FoundationError(f"cannot generate dashboards: {exc}; install the dev extras (pip install -e '.[dev]')") from None
    if not args.json:
        return main(["--check"] if args.check else [])
    if args.check:
        names = [str(DASHBOARD_DIR / f"{name}.json") for name in stale()]
        emit({"stale": names}, args, str)
        return 1 if names else 0
    emit({"wrote": [str(path) for path in write()]}, args, str)
    return 0
