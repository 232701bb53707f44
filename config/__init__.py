"""Configuration: the schema, the loader, and the shipped ``foundation.toml``.

This is the leaf package: it imports nothing else of Foundation. It also
holds the exception hierarchy, so every layer can share one root.
"""

from config.errors import (
    BrokerError,
    ConfigError,
    FoundationError,
    ProtocolError,
    SupervisorError,
    WorkerError,
)
from config.loader import SHIPPED, apply_env, build_config, load_config
from config.schema import (
    AuthConfig,
    Config,
    MetricsConfig,
    NatsConfig,
    NodeConfig,
    PoolConfig,
    QuotaConfig,
    SupervisorConfig,
    TlsConfig,
)

__all__ = [
    "AuthConfig", "TlsConfig", "BrokerError", "Config", "ConfigError", "FoundationError", "MetricsConfig", "NatsConfig",
    "NodeConfig", "PoolConfig", "ProtocolError", "QuotaConfig", "SHIPPED", "SupervisorConfig",
    "SupervisorError", "WorkerError", "apply_env", "build_config", "load_config",
]
