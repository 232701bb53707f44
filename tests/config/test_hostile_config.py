"""A careless config or environment is a clear ConfigError naming the key (``foundation up`` exits 2)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from config import ConfigError, load_config
from supervisor.harness import FOUNDATION


def load(text: str, tmp_path: Path, env: dict[str, str] | None = None):
    p = tmp_path / "f.toml"
    p.write_text(text)
    return load_config(p, env=env or {})


POOL = '[pools.p]\nhandler = "m:f"\n'


@pytest.mark.parametrize(("text", "key"), [
    (POOL + "ack_wait = nan\n", "pools.p.ack_wait"),
    (POOL + "ack_wait = inf\n", "pools.p.ack_wait"),
    (POOL + "backoff = [0.2, -inf]\nmax_deliver = 5\n", "pools.p.backoff[1]"),
    (POOL + "[pools.p.quota]\nrate_per_s = nan\n", "pools.p.quota.rate_per_s"),
    ("[node]\nregistry_ttl = inf\n", "node.registry_ttl"),
    ("[node]\nregistry_ttl = 400\n", "node.registry_ttl"),
    ("[nats]\nport = 70000\n", "nats.port"),
    ("[nats]\nmonitor_port = 0\n", "nats.monitor_port"),
    ("[metrics]\nport = 65536\n", "metrics.port"),
    (POOL + 'capabilities = ["has space"]\n', "pools.p.capabilities[0]"),
    (POOL + 'capabilities = [""]\n', "pools.p.capabilities[0]"),
])
def test_bad_values_name_their_key(text: str, key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(text, tmp_path)
    assert caught.value.key == key


def test_non_finite_number_from_the_environment_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="finite"):
        load(POOL, tmp_path, env={"FOUNDATION_POOLS__P__ACK_WAIT": "nan"})


def test_env_into_a_key_that_is_not_a_table_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pools: is not a table, so FOUNDATION_POOLS__ECHO__SIZE cannot set"):
        load("pools = 1\n", tmp_path, env={"FOUNDATION_POOLS__ECHO__SIZE": "2"})
    with pytest.raises(ConfigError, match="nats.url: is not a table"):
        load("[nats]\nurl = \"nats://h:1\"\n", tmp_path, env={"FOUNDATION_NATS__URL__X": "2"})


def test_non_utf8_file_and_directory_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'[node]\nname = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match="is not UTF-8"):
        load_config(bad, env={})
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, env={})


@pytest.mark.parametrize("kind", ["directory", "non-utf8"])
def test_foundation_up_exits_2_on_an_unreadable_config(kind: str, tmp_path: Path) -> None:
    path = tmp_path
    if kind == "non-utf8":
        path = tmp_path / "f.toml"
        path.write_bytes(b"\xff\xff")
    proc = subprocess.run([FOUNDATION, "up", "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "config error" in proc.stderr and "Traceback" not in proc.stderr
