"""The ``foundation`` command.

Each sub-command lives in its own module with ``register(subparsers)``;
this module only assembles them and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import sys

from config.errors import ConfigError, FoundationError
from supervisor.cli import auth, chaos, cluster, control, dashboards, market, publish, registry, up, variables

EXIT_USAGE = 2  # bad arguments or bad config
EXIT_FAILED = 1

COMMANDS = [up, publish, control, registry, variables, chaos, market, cluster, dashboards, auth]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="foundation",
        description="Supervised fleets of Python agents on NATS JetStream.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"foundation: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FoundationError as exc:
        print(f"foundation: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
