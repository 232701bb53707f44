"""promtool accepts the shipped rules and scrape config."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.deploy.tools import tool

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def test_promtool_check_rules_passes() -> None:
    rules = sorted(str(p) for p in (PROMETHEUS_DIR / "rules").glob("*.yml"))
    assert rules
    out = subprocess.run([tool("promtool"), "check", "rules", *rules], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_check_config_passes() -> None:
    out = subprocess.run(
        [tool("promtool"), "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
