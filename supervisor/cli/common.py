"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import argparse
from typing import Any

from config import Config, load_config


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="config file (default: $FOUNDATION_CONFIG or the shipped config/foundation.toml)")


def add_client_options(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    parser.add_argument("--url", help="NATS URL (default: nats.url of the config, or the embedded server's address)")


def client_url(args: Any, cfg: Config) -> str:
    """Where a CLI client connects: --url, the config's URL, or the local embedded server."""
    if args.url:
        return str(args.url)
    if cfg.nats.url:
        return cfg.nats.url
    port = cfg.nats.port if cfg.nats.port > 0 else 4222
    return f"nats://127.0.0.1:{port}"


def load(args: Any) -> Config:
    return load_config(getattr(args, "config", None))
