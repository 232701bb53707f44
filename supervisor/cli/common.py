"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit

from broker import NKEY_ENV, Identity, NatsUnavailableError, connect, identity_for
from config import Config, load_config
from config.errors import ConfigError

HANDLER_CHECK_TIMEOUT = 60.0  # seconds to import every handler module in the check process

# Run in a child process: user handler modules may start threads at import,
# and the supervisor must never fork after that (its fork server would).
_CHECK = """
import sys
from workers.handler import HandlerImportError, resolve
for pool, spec in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        resolve(spec)
    except HandlerImportError as exc:
        sys.stdout.write(pool + "\\t" + str(exc).replace("\\n", " ") + "\\n")
        sys.exit(3)
"""


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


PROBE_TIMEOUT = 1.0  # seconds: a refused connection is reported within this


async def connect_client(args: Any, cfg: Config, name: str, role: str = "operator", url: str | None = None) -> Any:
    """A CLI command's NATS connection, under its identity (see :func:`client_identity`).

    Raises:
        NatsUnavailableError: every server refused the connection (reported
            within :data:`PROBE_TIMEOUT`), or none answered in time.
    """
    url = url or client_url(args, cfg)
    await _refused_fast(url)
    return await connect(url, name=name, connect_timeout=cfg.nats.connect_timeout,
                         **client_identity(args, cfg, role).connect_options())


async def _refused_fast(url: str) -> None:
    """Raise at once when every server of ``url`` refuses TCP connections.

    The client library keeps retrying a refused server until its connect
    timeout; a person typing a command wants to hear "nothing listens there"
    now. A server that does not answer at all (a firewall) is left to the
    connect timeout.
    """

    async def refused(server: str) -> bool:
        parts = urlsplit(server.strip() if "://" in server else f"nats://{server.strip()}")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port or 4222), PROBE_TIMEOUT)
        except ConnectionRefusedError:
            return True
        except (OSError, asyncio.TimeoutError, ValueError):
            return False
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
        return False

    servers = [s for s in url.split(",") if s.strip()]
    if servers and all(await asyncio.gather(*(refused(s) for s in servers))):
        raise NatsUnavailableError(f"NATS refused the connection at {url}: is `foundation up` (or nats-server) "
                                   "running there? (--url or nats.url of --config)")


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


def check_handlers(cfg: Config) -> None:
    """Import every pool's handler in a child process, so a broken one is a config error.

    Raises:
        ConfigError: a handler cannot be imported (``pools.<name>.handler`` and the module's error).
    """
    if not cfg.pools:
        return
    args = [x for pool in cfg.pools.values() for x in (pool.name, pool.handler)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
    try:
        done = subprocess.run([sys.executable, "-c", _CHECK, *args], capture_output=True, text=True, env=env,
                              timeout=HANDLER_CHECK_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ConfigError("pools", f"importing the handlers took over {HANDLER_CHECK_TIMEOUT:g}s") from None
    if done.returncode == 3 and "\t" in done.stdout:
        pool, why = done.stdout.strip().split("\t", 1)
        raise ConfigError(f"pools.{pool}.handler", why)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ConfigError("pools", f"checking the handlers failed: {last}")
