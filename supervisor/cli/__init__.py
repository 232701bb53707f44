"""The ``foundation`` command.

Each sub-command lives in its own module with ``register(subparsers)``;
this module only assembles them and maps errors to exit codes.

Exit codes (also in ``foundation --help`` and the README):

====  ==========================================================================
0     done
1     the command failed (its message says why), or a task it waited for failed
2     bad arguments or config (nothing was done); ``up``: also a store_dir held
      by another node, or a stream that differs from the config
3     ``up``: the supervision tree gave up (restart intensity exceeded)
4     ``up``: a child could not be started (its reason is printed)
5     unavailable: NATS refused or did not answer, or no node answered
77    ``chaos run``: this machine cannot run the scenario (the reason is printed)
130   interrupted (Ctrl-C)
141   standard output was closed early (``| head``); nothing else is printed
====  ==========================================================================
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import PackageNotFoundError, version

from broker import NatsUnavailableError
from config.errors import ConfigError, FoundationError
from supervisor.cli import auth, chaos, cluster, control, dashboards, market, publish, registry, top, up, variables
from supervisor.control import ControlError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # bad arguments or bad config
EXIT_UNAVAILABLE = 5  # NATS or the node cannot be reached
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `yes | head`

COMMANDS = [up, publish, control, top, registry, variables, chaos, market, cluster, dashboards, auth]

EXIT_CODES = """exit codes:
  0    done
  1    the command failed (its message says why), or a task it waited for failed
  2    bad arguments or config; up: store_dir held by another node, or a stream differs from the config
  3    up: the supervision tree gave up (restart intensity exceeded)
  4    up: a child could not be started (its reason is printed)
  5    unavailable: NATS refused or did not answer, or no node answered
  77   chaos run: this machine cannot run the scenario (the reason is printed)
  130  interrupted (Ctrl-C)
  141  standard output closed early (| head)"""


def _version() -> str:
    try:
        return version("foundation")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="foundation",
        description="Supervised fleets of Python agents on NATS JetStream.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"foundation {_version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here rather than at exit
        return code
    except BrokenPipeError:
        return _broken_pipe()
    except ConfigError as exc:
        print(f"foundation: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NatsUnavailableError as exc:
        print(f"foundation: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except ControlError as exc:
        print(f"foundation: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE if exc.code in (503, 504) else EXIT_FAILED
    except FoundationError as exc:
        print(f"foundation: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _broken_pipe() -> int:
    # Whoever read our output has gone (`| head`): say nothing more, and keep
    # the interpreter's final flush of stdout from failing noisily as well.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE
