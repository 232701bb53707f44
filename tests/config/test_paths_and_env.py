"""Relative paths of a config file resolve next to it; an environment override cannot invent a pool by a typo."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, load_config

POOL = '[pools.echo]\nhandler = "workers.examples:echo"\n'


def test_relative_paths_resolve_against_the_config_files_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "f.toml").write_text('[nats]\nstore_dir = "data/nats"\n' + POOL)
    monkeypatch.chdir(tmp_path)  # anywhere else
    cfg = load_config(str(Path("etc") / "f.toml"), env={})
    assert cfg.nats.store_dir == str(folder / "data" / "nats")
    assert cfg.metrics.dir == str(folder / "var" / "metrics")  # the default, relative too


def test_absolute_paths_and_the_shipped_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f.toml").write_text(f'[metrics]\ndir = "{tmp_path / "m"}"\n' + POOL)
    assert load_config(str(tmp_path / "f.toml"), env={}).metrics.dir == str(tmp_path / "m")
    monkeypatch.chdir(tmp_path)  # the shipped config is used in place: its paths are the current directory's
    assert load_config(env={}).nats.store_dir == str(tmp_path / "var" / "nats")


def test_an_override_of_a_pool_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f.toml").write_text(POOL)
    with pytest.raises(ConfigError, match=r"pools.ech: FOUNDATION_POOLS__ECH__SIZE overrides a pool the config does "
                                          r"not have \(pools: echo\); did you mean 'echo'\? to add a pool from the "
                                          r"environment, set FOUNDATION_POOLS__ECH__HANDLER as well"):
        load_config(str(tmp_path / "f.toml"), env={"FOUNDATION_POOLS__ECH__SIZE": "3"})
    cfg = load_config(str(tmp_path / "f.toml"), env={"FOUNDATION_POOLS__ECHO__SIZE": "3",
                                                      "FOUNDATION_POOLS__EXTRA__HANDLER": "workers.examples:echo",
                                                      "FOUNDATION_POOLS__EXTRA__SIZE": "2"})
    assert (cfg.pools["echo"].size, cfg.pools["extra"].size) == (3, 2)
