"""Load ``foundation.toml``, apply ``FOUNDATION_*`` environment overrides, and
build the typed :class:`~config.schema.Config`.

Every error names the offending key (``pools.echo.size``) and says why.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
import typing
from pathlib import Path
from typing import Any, Mapping

from config.errors import ConfigError
from config.schema import AuthConfig, Config, MetricsConfig, NatsConfig, NodeConfig, PoolConfig, SupervisorConfig

ENV_PREFIX = "FOUNDATION_"
SHIPPED = Path(__file__).with_name("foundation.toml")
_SECTIONS = {
    "node": NodeConfig, "nats": NatsConfig, "metrics": MetricsConfig, "supervisor": SupervisorConfig, "auth": AuthConfig,
}


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file.

    Args:
        path: the TOML file; ``None`` means ``$FOUNDATION_CONFIG`` or the shipped
            ``config/foundation.toml``.
        env: environment for ``FOUNDATION_SECTION__KEY=value`` overrides;
            defaults to ``os.environ``.

    Returns:
        The validated config.

    Raises:
        ConfigError: the file is missing, is not TOML, or a key is wrong.
    """
    env = os.environ if env is None else env
    path = Path(path or env.get("FOUNDATION_CONFIG") or SHIPPED)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("", f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError("", f"config path {path} is a directory; give the path of a foundation.toml file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"{path} is not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path} is not valid TOML: {exc}") from None
    apply_env(raw, env)
    # Relative paths in a config file mean "next to this file", wherever the
    # node is started from; the shipped config is a template used in place,
    # so its paths stay relative to the current directory (`make run`: ./var).
    _resolve_paths(raw, Path.cwd() if path.resolve() == SHIPPED.resolve() else path.resolve().parent)
    return build_config(raw, str(path))


PATH_KEYS = (("nats", "store_dir"), ("metrics", "dir"))  # resolved against the config file's folder


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Make the relative paths of :data:`PATH_KEYS` — written or left at their defaults — absolute."""
    for section, key in PATH_KEYS:
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            continue  # build_config names the error
        value = table.get(key, _default(section, key))
        if isinstance(value, str) and value:
            table[key] = str(base / Path(value).expanduser())  # an absolute path stays as it is


def _default(section: str, key: str) -> Any:
    return next(f.default for f in dataclasses.fields(_SECTIONS[section]) if f.name == key)


def apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    """Overlay ``FOUNDATION_NATS__URL=…`` style variables onto ``raw`` in place.

    A value is read as a TOML value when it parses as one (``4``, ``[0.2, 1]``,
    ``true``), else taken as a plain string. An override of a pool the file
    does not have is refused — a typo (``FOUNDATION_POOLS__ECH__SIZE``) must
    not create a pool — unless the environment gives that pool a handler too.

    Raises:
        ConfigError: an override names a pool that does not exist.
    """
    names = [name for name in env if name.startswith(ENV_PREFIX) and "__" in name]
    for name, value in sorted((n, env[n]) for n in names):
        keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__")]
        if keys[0] == "pools" and len(keys) >= 3 and isinstance(raw.get("pools", {}), dict):
            _check_pool_override(raw.get("pools", {}), keys[1], name, env)
        node = raw
        for depth, key in enumerate(keys[:-1]):
            if depth == 1 and keys[0] == "pools":
                key = keys[1] = _find_pool(node, key)
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                where = ".".join(keys[: depth + 1])
                raise ConfigError(where, f"is not a table, so {name} cannot set a key inside it; "
                                         f"make {where} a table or unset {name}")
        node[keys[-1]] = _parse_scalar(value)


def _check_pool_override(pools: dict[str, Any], lowered: str, name: str, env: Mapping[str, str]) -> None:
    """Refuse ``FOUNDATION_POOLS__<P>__KEY`` for a pool the file lacks, unless the environment gives <P> a handler."""
    token = name[len(ENV_PREFIX):].split("__")[1]
    if _find_pool(pools, lowered) in pools or f"{ENV_PREFIX}POOLS__{token}__HANDLER" in env:
        return
    close = difflib.get_close_matches(lowered, list(pools), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"pools.{lowered}", f"{name} overrides a pool the config does not have "
                      f"(pools: {', '.join(pools) or 'none'}); {hint}to add a pool from the environment, "
                      f"set {ENV_PREFIX}POOLS__{token}__HANDLER as well")


def _find_pool(pools: dict[str, Any], lowered: str) -> str:
    # Environment names are upper-cased; recover the pool's spelling.
    for name in pools:
        if name.lower() == lowered:
            return name
    return lowered


def _parse_scalar(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def build_config(raw: dict[str, Any], path: str = "") -> Config:
    """Validate a parsed TOML document into a :class:`Config`."""
    _reject_unknown(raw, list(_SECTIONS) + ["pools", "variables"], "")
    if "password" in _table(raw, "nats", "nats"):
        # A config file is shown, copied and committed; a password there is a leak.
        raise ConfigError("nats.password", "is never read from the config: set $FOUNDATION_NATS_PASSWORD "
                          "or name a file holding it with nats.password_file")
    sections = {name: _build(cls, _table(raw, name, name), name) for name, cls in _SECTIONS.items()}
    pools_raw = _table(raw, "pools", "pools")
    pools = {}
    for name, table in pools_raw.items():
        if not isinstance(table, dict):
            raise ConfigError(f"pools.{name}", "must be a table ([pools.NAME])")
        if "handler" not in table:
            raise ConfigError(f"pools.{name}.handler", "is required ('module:callable')")
        pools[name] = _build(PoolConfig, {**table, "name": name}, f"pools.{name}")
    return Config(pools=pools, variables=_variables(_table(raw, "variables", "variables")), path=path, **sections)


def _variables(tables: dict[str, Any]) -> dict[str, dict[str, Any]]:
    # Only the shape: the node checks kinds, bounds and defaults against the
    # parameter space (protocols.variables), which config must not import.
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"variables.{name}", "must be a table ([variables.NAME] with kind, default, ...)")
        if "kind" not in table and "type" not in table:
            raise ConfigError(f"variables.{name}.kind", "is required: float, int, choice or bool")
    return {name: dict(table) for name, table in tables.items()}


def _table(raw: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(where, f"must be a table, got {type(value).__name__}")
    return value


def _reject_unknown(table: dict[str, Any], known: list[str], where: str) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"
            raise ConfigError(f"{where}.{key}" if where else key, f"unknown key{hint}")


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.name != "name" or "name" in table]
    _reject_unknown(table, fields, where)
    kwargs = {}
    for key, value in table.items():
        key_path = where if key == "name" and where.startswith("pools.") else f"{where}.{key}"
        kwargs[key] = _coerce(hints[key], value, key_path)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # Sections validate with short keys ("quota.max_rss_mb"); give the full path.
        if not exc.key.startswith(where.split(".")[0]):
            raise ConfigError(f"{where}.{exc.key.split('.', 1)[-1]}", exc.why) from None
        raise


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(key, f"must be a table, got {type(value).__name__}")
        return _build(hint, value, key)
    origin = typing.get_origin(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise ConfigError(key, f"must be a list, got {type(value).__name__} {value!r}")
        return tuple(_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"must be a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise ConfigError(key, f"must be a finite number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {type(value).__name__} {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(key, f"unsupported type {hint!r}")  # pragma: no cover - schema bug
