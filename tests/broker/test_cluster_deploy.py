"""The shipped three-host files: valid nats-server configs that agree, and a node config that loads."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from broker import server_binary
from config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "cluster"


def test_the_three_server_configs_are_valid_and_agree() -> None:
    names, routes = [], []
    for k in (1, 2, 3):
        conf = DEPLOY / f"nats-{k}.conf"
        check = subprocess.run([server_binary(), "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        text = conf.read_text()
        names.append(re.search(r"^server_name: (\S+)", text, re.M).group(1))
        routes.append(re.findall(r"nats-route://\S+", text))
        assert re.search(r"^\s*sync_interval: always$", text, re.M)
    assert names == ["nats-1", "nats-2", "nats-3"]
    assert routes[0] == routes[1] == routes[2] and len(routes[0]) == 3


def test_the_host_config_lists_every_server_and_three_replicas() -> None:
    cfg = load_config(str(DEPLOY / "foundation.toml"))
    assert cfg.nats.replicas == 3
    assert cfg.nats.servers == [f"nats://nats-{k}.internal:4222" for k in (1, 2, 3)]
    assert not cfg.nats.embedded
