"""``foundation dashboards [--check]``: regenerate the Grafana dashboards (as ``make dashboards``)."""

from __future__ import annotations

import argparse
from typing import Any

from config.errors import FoundationError


def register(sub: Any) -> None:
    p = sub.add_parser("dashboards", help="regenerate deploy/grafana/dashboards/*.json from deploy/grafana/*.py")
    p.add_argument("--check", action="store_true", help="only check: exit 1 if a committed dashboard is stale")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:  # the generator needs grafana-foundation-sdk, a development dependency
        from deploy.grafana.__main__ import main
    except ImportError as exc:
        raise FoundationError(f"cannot generate dashboards: {exc}; install the dev extras (pip install -e '.[dev]')") from None
    return main(["--check"] if args.check else [])
