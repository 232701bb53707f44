"""The config keys of the agent protocols: ``node.registry_ttl`` and ``[variables.<name>]``."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, load_config
from supervisor.agents import parse_variables


def load(text: str, tmp_path: Path, env: dict[str, str] | None = None):
    p = tmp_path / "f.toml"
    p.write_text(text)
    return load_config(p, env=env or {})


def test_registry_ttl_defaults_and_overrides(tmp_path: Path) -> None:
    assert load("", tmp_path).node.registry_ttl == 10.0
    assert load("[node]\nregistry_ttl = 3\n", tmp_path).node.registry_ttl == 3.0
    assert load("", tmp_path, env={"FOUNDATION_NODE__REGISTRY_TTL": "2"}).node.registry_ttl == 2.0
    with pytest.raises(ConfigError, match=r"^node.registry_ttl: must be > 0, got 0.0$"):
        load("[node]\nregistry_ttl = 0\n", tmp_path)


def test_variables_tables_are_kept_raw_and_typed_by_the_node(tmp_path: Path) -> None:
    cfg = load(
        '[variables.lr]\nkind = "float"\ndefault = 0.01\nlow = 0.0001\nhigh = 1.0\nlog = true\n'
        '[variables."train.mode"]\nkind = "choice"\ndefault = "fast"\nchoices = ["fast", "exact"]\n',
        tmp_path, env={"FOUNDATION_VARIABLES__LR__DEFAULT": "0.1"},
    )
    assert cfg.variables["lr"] == {"kind": "float", "default": 0.1, "low": 0.0001, "high": 1.0, "log": True}
    space = parse_variables(cfg.variables)
    assert space.defaults() == {"lr": 0.1, "train.mode": "fast"}
    assert load("", tmp_path).variables == {}


@pytest.mark.parametrize("text, message", [
    ("[variables]\nlr = 3\n", r"^variables.lr: must be a table"),
    ("[variables.lr]\ndefault = 3\n", r"^variables.lr.kind: is required: float, int, choice or bool$"),
    ("[variables.train.lr]\nkind = \"float\"\n", r"^variables.train.kind: is required"),  # unquoted dots nest
])
def test_variables_shape_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(text, tmp_path)


@pytest.mark.parametrize("table, message", [
    ({"kind": "float", "default": 5, "low": 0, "high": 1}, r"^variables.lr: variable 'lr': 5.0 is above its upper bound"),
    ({"kind": "complex", "default": 1}, r"^variables.lr: variable 'lr': unknown kind 'complex'"),
    ({"kind": "float", "default": 0.5}, r"^variables.lr: variable 'lr': .*missing"),
    ({"kind": "float", "default": 0.5, "low": "a", "high": 1}, r"^variables.lr: "),
])
def test_invalid_definitions_are_config_errors(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_variables({"lr": table})
