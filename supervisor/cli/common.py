"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import argparse
import os
from typing import Any

from broker import NKEY_ENV, Identity, connect, identity_for
from config import Config, load_config


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="config file (default: $FOUNDATION_CONFIG or the shipped config/foundation.toml)")


def add_client_options(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    parser.add_argument("--url", help="NATS URL (default: nats.url of the config, or the embedded server's address)")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--nkey", metavar="FILE", help=f"connect with this nkey seed (default: ${NKEY_ENV}, "
                     "else the command's role from [auth] dir when auth is enabled)")
    who.add_argument("--creds", metavar="FILE", help="connect with this .creds file")


def client_identity(args: Any, cfg: Config, role: str = "operator") -> Identity:
    """Who a CLI command connects as: --creds, --nkey, $FOUNDATION_NKEY, else ``role``'s identity under the config."""
    if getattr(args, "creds", None):
        return Identity(creds=args.creds, tls=cfg.nats.tls)
    seed = getattr(args, "nkey", None) or os.environ.get(NKEY_ENV)
    if seed:
        return Identity(nkey_seed_file=seed, tls=cfg.nats.tls)
    return identity_for(cfg, role)


async def connect_client(args: Any, cfg: Config, name: str, role: str = "operator", url: str | None = None) -> Any:
    """A CLI command's NATS connection, under its identity (see :func:`client_identity`)."""
    return await connect(url or client_url(args, cfg), name=name, **client_identity(args, cfg, role).connect_options())


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
