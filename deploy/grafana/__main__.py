"""``python -m deploy.grafana [--check]``: regenerate the dashboards, or check they are current."""

from __future__ import annotations

import argparse
import sys

from deploy.grafana.generate import DASHBOARD_DIR, stale, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.grafana", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed dashboard is stale")
    args = parser.parse_args(argv)
    if args.check:
        names = stale()
        for name in names:
            print(f"stale: {DASHBOARD_DIR / name}.json; run `make dashboards`", file=sys.stderr)
        return 1 if names else 0
    for path in write():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
