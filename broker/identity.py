"""Who a process is to NATS: its credentials and TLS settings (DESIGN.md §10).

An :class:`Identity` turns into the keyword options of :func:`broker.connect`.
It comes from one of:

* the config's ``[nats]`` keys (:func:`identity_from_config`): ``creds``,
  ``nkey_seed_file``, or ``user`` with a password read from
  ``$FOUNDATION_NATS_PASSWORD`` or ``nats.password_file`` — never from the
  config itself, so printing a config or a ``status`` never shows it;
* a role of ``foundation auth init`` (:func:`role_identity`): the seed file
  ``<dir>/<role>.nk``, or for a worker ``<dir>/workers/<agent>.nk``
  (:func:`worker_identity`), the identity the server lets write only that
  agent's own keys.

TLS (``nats.tls.ca``, ``.cert``, ``.key``) goes with every identity: it is
about the server, not the role.

The password is kept out of ``repr`` and out of :meth:`Identity.describe`,
which is what logs and ``status`` show.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nkeys

from broker.permissions import inbox_prefix
from config.errors import BrokerError
from config.schema import Config, NatsConfig, TlsConfig

PASSWORD_ENV = "FOUNDATION_NATS_PASSWORD"
NKEY_ENV = "FOUNDATION_NKEY"  # the CLI's identity when --nkey/--creds are not given
ROLES = ("client", "worker", "node", "operator")


class IdentityError(BrokerError):
    """An identity file is missing or unreadable, or TLS files are wrong."""


@dataclass(frozen=True)
class Identity:
    """Credentials and TLS of one connection; empty means anonymous, plain TCP.

    Only file paths are kept (except the password): the files are read when
    connecting, so a rotated credential is picked up by the next connection.
    """

    creds: str = ""
    nkey_seed_file: str = ""
    user: str = ""
    password: str = field(default="", repr=False)
    tls: TlsConfig = field(default_factory=TlsConfig)

    @property
    def anonymous(self) -> bool:
        return not (self.creds or self.nkey_seed_file or self.user)

    def describe(self) -> str:
        """One line for logs and ``status``: which identity, never a secret."""
        who = (
            f"creds {self.creds}" if self.creds
            else f"nkey {self.nkey_seed_file}" if self.nkey_seed_file
            else f"user {self.user}" if self.user
            else "anonymous"
        )
        return who + (" over TLS" if self.tls.enabled else "")

    def with_tls(self, tls: TlsConfig) -> Identity:
        return replace(self, tls=tls)

    def connect_options(self) -> dict[str, Any]:
        """Keyword options of ``nats.connect`` for this identity.

        Raises:
            IdentityError: a named file does not exist or TLS files do not load.
        """
        opts: dict[str, Any] = {}
        if self.creds:
            opts["user_credentials"] = _existing(self.creds, "nats.creds")
        elif self.nkey_seed_file:
            opts["nkeys_seed"] = _existing(self.nkey_seed_file, "nats.nkey_seed_file")
            # Its replies arrive under its own prefix, the only inboxes the
            # generated permissions let it read (broker.permissions).
            opts["inbox_prefix"] = inbox_prefix(_public_key(self.nkey_seed_file))
        elif self.user:
            opts["user"], opts["password"] = self.user, self.password
        if self.tls.enabled:
            opts["tls"] = tls_context(self.tls)
        return opts


def _existing(path: str, what: str) -> str:
    if not Path(path).is_file():
        raise IdentityError(
            f"{what}: {path} does not exist; run `foundation auth init` (it writes one identity per role "
            "and per worker slot of the config's pools and nodes) or fix the path"
        )
    return path


def _public_key(seed_file: str) -> str:
    try:
        return nkeys.from_seed(bytearray(Path(seed_file).read_bytes().strip())).public_key.decode()
    except (OSError, nkeys.NkeysError, ValueError) as exc:
        raise IdentityError(f"{seed_file} does not hold an nkey seed: {exc}") from exc


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """A client TLS context trusting ``tls.ca`` (or the system CAs), with the client certificate if given.

    Raises:
        IdentityError: a file is missing or is not a valid PEM certificate or key.
    """
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca or None)
        if tls.cert:
            ctx.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise IdentityError(f"nats.tls: cannot load {tls.ca or ''} {tls.cert or ''}: {exc}") from exc
    return ctx


def read_password(cfg: NatsConfig, env: dict[str, str] | os._Environ[str] | None = None) -> str:
    """The password of ``nats.user``: ``$FOUNDATION_NATS_PASSWORD``, else the first line of ``nats.password_file``.

    Raises:
        IdentityError: a user is set but no password is to be found.
    """
    env = os.environ if env is None else env
    if env.get(PASSWORD_ENV):
        return env[PASSWORD_ENV]
    if cfg.password_file:
        try:
            lines = Path(cfg.password_file).read_text().splitlines()
        except OSError as exc:
            raise IdentityError(f"nats.password_file: cannot read {cfg.password_file}: {exc.strerror}") from exc
        return lines[0].strip() if lines else ""
    raise IdentityError(f"nats.user {cfg.user!r} needs a password: set ${PASSWORD_ENV} or nats.password_file")


def identity_from_config(cfg: NatsConfig, env: dict[str, str] | os._Environ[str] | None = None) -> Identity:
    """The identity the ``[nats]`` section names (anonymous if none)."""
    password = read_password(cfg, env) if cfg.user else ""
    return Identity(creds=cfg.creds, nkey_seed_file=cfg.nkey_seed_file, user=cfg.user, password=password, tls=cfg.tls)


def role_seed_file(auth_dir: str | Path, role: str) -> Path:
    if role not in ROLES:
        raise IdentityError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    return Path(auth_dir) / f"{role}.nk"


def worker_seed_file(auth_dir: str | Path, agent: str) -> Path:
    """Seed of the worker identity of agent ``<node>.<pool>.<n>``."""
    return Path(auth_dir) / "workers" / f"{agent}.nk"


def role_identity(auth_dir: str | Path, role: str, tls: TlsConfig | None = None) -> Identity:
    """The identity of ``role`` written by ``foundation auth init`` into ``auth_dir``.

    Raises:
        IdentityError: the seed file is missing.
    """
    path = role_seed_file(auth_dir, role)
    _existing(str(path), f"the {role} identity")
    return Identity(nkey_seed_file=str(path), tls=tls or TlsConfig())


def worker_identity(auth_dir: str | Path, agent: str, tls: TlsConfig | None = None) -> Identity:
    """The identity of worker agent ``<node>.<pool>.<n>``.

    Not checked here: a missing seed (a pool grew past what ``auth init``
    wrote, or another node name) fails that worker's connection, with the
    fix in the message, rather than the whole node.
    """
    return Identity(nkey_seed_file=str(worker_seed_file(auth_dir, agent)), tls=tls or TlsConfig())


def identity_for(cfg: Config, role: str, agent: str = "", *, env: dict[str, str] | os._Environ[str] | None = None) -> Identity:
    """The identity a process of ``role`` uses under ``cfg``.

    With ``[auth] enabled`` it is the role's identity from ``auth.dir`` (for a
    worker, its agent's); otherwise the ``[nats]`` identity (often anonymous).
    ``nats.tls`` applies either way.

    Raises:
        IdentityError: a needed seed file or password is missing.
    """
    if not cfg.auth.enabled:
        return identity_from_config(cfg.nats, env)
    if role == "worker" and agent:
        return worker_identity(cfg.auth.dir, agent, cfg.nats.tls)
    return role_identity(cfg.auth.dir, role, cfg.nats.tls)
