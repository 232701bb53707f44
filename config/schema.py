"""Typed config sections. Each dataclass validates itself in ``__post_init__``.

Seconds are floats; other units are in the name (``max_rss_mb``).
"""

from __future__ import annotations

import math
import re
import socket
from dataclasses import dataclass, field
from typing import Any

from config.errors import ConfigError

_POOL_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
RESTART_TYPES = ("permanent", "transient", "temporary")
DISPATCH_MODES = ("queue", "market")
_SYNC = re.compile(r"^(always|[0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))$")


REGISTRY_MAX_TTL = 300.0  # broker.catalog.REGISTRY_MAX_AGE; config imports nothing above it
_CAPABILITY = re.compile(r"^\S{1,200}$")


def _positive(key: str, value: float, *, allow_zero: bool = False) -> None:
    if not math.isfinite(value):
        raise ConfigError(key, f"must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(key, f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


@dataclass(frozen=True)
class NodeConfig:
    name: str = ""
    registry_ttl: float = 10.0  # seconds a lost node's agents stay in the registry (whole seconds on the wire)

    def __post_init__(self) -> None:
        _positive("node.registry_ttl", self.registry_ttl)
        if self.registry_ttl >= REGISTRY_MAX_TTL:
            raise ConfigError("node.registry_ttl", f"must be below {REGISTRY_MAX_TTL:g} seconds (the registry bucket's "
                              f"max age), got {self.registry_ttl:g}")
        if not self.name:
            object.__setattr__(self, "name", socket.gethostname().split(".")[0] or "local")
        if not _POOL_NAME.match(self.name):
            raise ConfigError("node.name", f"must match [A-Za-z0-9_-]+ (it is a subject token), got {self.name!r}")


@dataclass(frozen=True)
class TlsConfig:
    ca: str = ""  # PEM file of the CA that signed the servers' certificates
    cert: str = ""  # client certificate (PEM), for servers that verify clients
    key: str = ""  # its private key (PEM)

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ConfigError("tls.cert", "a client certificate needs both nats.tls.cert and nats.tls.key")

    @property
    def enabled(self) -> bool:
        return bool(self.ca or self.cert)


@dataclass(frozen=True)
class NatsConfig:
    url: str = ""  # empty: run the embedded nats-server
    store_dir: str = "var/nats"
    port: int = 4222  # embedded server client port; -1 picks a free one
    monitor_port: int = 8222  # embedded server /healthz port; -1 picks a free one
    results_max_age: float = 7 * 24 * 3600.0
    dlq_max_age: float = 30 * 24 * 3600.0
    duplicate_window: float = 120.0
    connect_timeout: float = 5.0
    monitor_urls: tuple[str, ...] = ()  # http://host:8222 of external servers, polled for foundation_nats_*
    # Identity (DESIGN.md §10); at most one of creds, nkey_seed_file, user.
    creds: str = ""  # a .creds file (user JWT and seed)
    nkey_seed_file: str = ""  # a file holding an nkey seed (SU...)
    user: str = ""  # with a password from $FOUNDATION_NATS_PASSWORD or password_file, never the config
    password_file: str = ""
    tls: TlsConfig = field(default_factory=TlsConfig)
    replicas: int = 1  # of every stream and KV bucket; 3 on a 3-server cluster
    sync: str = ""  # JetStream sync_interval of the embedded server: "always" or "<n>ms|s|m|h"; "" = 2m

    def __post_init__(self) -> None:
        for name in ("results_max_age", "dlq_max_age", "duplicate_window", "connect_timeout"):
            _positive(f"nats.{name}", getattr(self, name))
        for name in ("port", "monitor_port"):
            port = getattr(self, name)
            if port != -1 and not 1 <= port <= 65535:
                raise ConfigError(f"nats.{name}", f"must be 1..65535 (or -1 to pick a free port), got {port}")
        for i, url in enumerate(self.monitor_urls):
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"nats.monitor_urls[{i}]", f"must start with http:// (a server's monitoring port), got {url!r}")
        given = [name for name in ("creds", "nkey_seed_file", "user") if getattr(self, name)]
        if len(given) > 1:
            raise ConfigError(f"nats.{given[1]}", f"give one identity: {' and '.join(given)} are both set")
        if self.password_file and not self.user:
            raise ConfigError("nats.password_file", "a password needs nats.user")
        if not 1 <= self.replicas <= 5:
            raise ConfigError("nats.replicas", f"must be 1..5 (NATS keeps at most 5 replicas), got {self.replicas}")
        if self.sync and not _SYNC.match(self.sync):
            raise ConfigError("nats.sync", f'must be "always" or a duration such as "1s", "500ms", "2m", got {self.sync!r}')
        for url in self.servers:
            if not url.startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ConfigError("nats.url", f"must start with nats:// (or tls://), comma-separated for a cluster, got {url!r}; leave it empty for the embedded server")

    @property
    def servers(self) -> list[str]:
        """The server list of ``url`` (comma-separated, blanks ignored)."""
        return [u.strip() for u in self.url.split(",") if u.strip()]

    @property
    def embedded(self) -> bool:
        return not self.url


@dataclass(frozen=True)
class AuthConfig:
    enabled: bool = False  # the embedded server requires the identities of `foundation auth init`
    dir: str = "var/auth"  # where `foundation auth init` wrote them

    def __post_init__(self) -> None:
        if not self.dir:
            raise ConfigError("auth.dir", "must name the directory written by `foundation auth init`")


@dataclass(frozen=True)
class MetricsConfig:
    port: int = 9464  # 0 disables /metrics; -1 picks a free port
    host: str = "127.0.0.1"
    dir: str = "var/metrics"  # multiprocess value files; wiped at start
    sample_interval: float = 5.0  # seconds between samples of consumers, streams, registry and NATS monitoring

    def __post_init__(self) -> None:
        if not -1 <= self.port <= 65535:
            raise ConfigError("metrics.port", f"must be 0..65535 (0 disables, -1 picks a free port), got {self.port}")
        _positive("metrics.sample_interval", self.sample_interval)


@dataclass(frozen=True)
class SupervisorConfig:
    max_restarts: int = 5
    max_seconds: float = 10.0
    shutdown: float = 10.0  # seconds a child gets between SIGTERM and SIGKILL
    max_workers: int = 256  # workers a scale request may bring the node to (all pools); 0 = no limit

    def __post_init__(self) -> None:
        _positive("supervisor.max_restarts", self.max_restarts, allow_zero=True)
        _positive("supervisor.max_workers", self.max_workers, allow_zero=True)
        _positive("supervisor.max_seconds", self.max_seconds)
        _positive("supervisor.shutdown", self.shutdown)


@dataclass(frozen=True)
class QuotaConfig:
    max_rss_mb: float = 0.0  # 0: unlimited
    max_cpu_percent: float = 0.0
    cpu_window: float = 10.0  # seconds the CPU limit must be exceeded for
    max_open_fds: int = 0
    rate_per_s: float = 0.0  # cluster-wide, shared by all workers of the pool
    max_concurrency: int = 0  # cluster-wide in-flight tasks

    def __post_init__(self) -> None:
        for name in ("max_rss_mb", "max_cpu_percent", "max_open_fds", "rate_per_s", "max_concurrency"):
            _positive(f"quota.{name}", getattr(self, name), allow_zero=True)
        _positive("quota.cpu_window", self.cpu_window)


@dataclass(frozen=True)
class PoolConfig:
    name: str
    handler: str
    size: int = 1
    concurrency: int = 8
    max_deliver: int = 5
    backoff: tuple[float, ...] = (0.2, 1.0, 5.0)
    ack_wait: float = 30.0
    capabilities: tuple[str, ...] = ()
    max_body_bytes: int = 1024 * 1024
    batch: int = 0  # messages per fetch; 0 = concurrency
    restart: str = "permanent"
    max_restarts: int = 10  # the pool's own restart intensity
    max_seconds: float = 10.0
    shutdown: float = 10.0
    time_limit: float = 0.0  # soft limit in seconds; 0 disables
    hard_time_limit: float = 0.0  # worker recycled past this; 0 disables
    max_tasks_per_child: int = 0
    max_age_s: float = 0.0
    persist_state: bool = True  # ctx.state of handlers taking ctx lives in the agent_state bucket
    state_window: int = 100  # settled task ids an agent state remembers, besides unsettled ones
    min_size: int = 0  # autoscaling bounds; 0 disables autoscaling
    max_size: int = 0
    dispatch: str = "queue"
    quota: QuotaConfig = field(default_factory=QuotaConfig)

    def __post_init__(self) -> None:
        p = f"pools.{self.name}"
        if not _POOL_NAME.match(self.name):
            raise ConfigError(p, "a pool name must match [A-Za-z0-9_-]+ (it is a subject token)")
        if ":" not in self.handler or self.handler.startswith(":") or self.handler.endswith(":"):
            raise ConfigError(f"{p}.handler", f"must be 'module:callable', got {self.handler!r}")
        for name in ("size", "concurrency", "max_deliver", "max_body_bytes"):
            _positive(f"{p}.{name}", getattr(self, name))
        for name in ("ack_wait", "max_seconds", "shutdown"):
            _positive(f"{p}.{name}", getattr(self, name))
        _positive(f"{p}.state_window", self.state_window)
        for name in ("batch", "max_restarts", "time_limit", "hard_time_limit",
                     "max_tasks_per_child", "max_age_s", "min_size", "max_size"):
            _positive(f"{p}.{name}", getattr(self, name), allow_zero=True)
        for i, b in enumerate(self.backoff):
            _positive(f"{p}.backoff[{i}]", b)
        if self.backoff and len(self.backoff) >= self.max_deliver:
            raise ConfigError(f"{p}.backoff", f"has {len(self.backoff)} delays but max_deliver is {self.max_deliver}; give at most max_deliver - 1 delays")
        if self.restart not in RESTART_TYPES:
            raise ConfigError(f"{p}.restart", f"must be one of {', '.join(RESTART_TYPES)}, got {self.restart!r}")
        if self.dispatch not in DISPATCH_MODES:
            raise ConfigError(f"{p}.dispatch", f"must be one of {', '.join(DISPATCH_MODES)}, got {self.dispatch!r}")
        if self.hard_time_limit and self.time_limit and self.hard_time_limit <= self.time_limit:
            raise ConfigError(f"{p}.hard_time_limit", "must be greater than time_limit")
        if self.max_size and self.min_size > self.max_size:
            raise ConfigError(f"{p}.min_size", f"is {self.min_size}, above max_size {self.max_size}")
        for i, cap in enumerate(self.capabilities):
            # A capability is one token in the registry (and in vote:<group> a subject token).
            if not _CAPABILITY.match(cap):
                raise ConfigError(f"{p}.capabilities[{i}]", f"must be a non-empty word without whitespace, got {cap!r}")

    @property
    def fetch_batch(self) -> int:
        return self.batch or self.concurrency

    def backoff_for(self, attempt: int) -> float:
        """Delay before redelivering after failed ``attempt`` (1-based)."""
        if not self.backoff:
            return 0.0
        return self.backoff[min(attempt, len(self.backoff)) - 1]


@dataclass(frozen=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    nats: NatsConfig = field(default_factory=NatsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    pools: dict[str, PoolConfig] = field(default_factory=dict)
    # [variables.<name>] tables, checked for shape only here; the node builds
    # the typed parameter space from them (config imports nothing above it).
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: str = ""  # where it was loaded from, for messages

    def pool(self, name: str) -> PoolConfig:
        try:
            return self.pools[name]
        except KeyError:
            raise ConfigError(f"pools.{name}", f"no such pool; known pools: {', '.join(self.pools) or 'none'}") from None
