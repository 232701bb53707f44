"""Several real ``foundation up`` nodes on one NATS server, for the agent-protocol tests."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

from supervisor.harness import FOUNDATION, REPO, NodeProcess, write_config


async def start_node(tmp_path: Path, name: str, nats_url: str, pools: dict[str, dict[str, Any]], *,
                     registry_ttl: float | None = None, **sections: dict[str, Any]) -> NodeProcess:
    """Start node ``name`` (its own directory, config and metrics) and wait until it is up.

    ``registry_ttl`` goes through the environment (``FOUNDATION_NODE__REGISTRY_TTL``),
    which the config loader applies like any key.
    """
    home = tmp_path / name
    home.mkdir()
    config = write_config(home / "foundation.toml", nats_url=nats_url, pools=pools, node=name, **sections)
    env = {} if registry_ttl is None else {"FOUNDATION_NODE__REGISTRY_TTL": str(registry_ttl)}
    node = NodeProcess(config, env=env)
    try:
        return await asyncio.to_thread(node.wait_up)
    except BaseException:
        node.kill()
        raise


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``foundation ARGS`` as a separate process (off the event loop)."""

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([FOUNDATION, *args], capture_output=True, text=True, timeout=60, cwd=REPO)

    return await asyncio.to_thread(run)


async def stop_all(*nodes: NodeProcess) -> list[int]:
    """SIGTERM every node at once; their exit codes."""
    return list(await asyncio.gather(*(asyncio.to_thread(n.stop) for n in nodes)))
