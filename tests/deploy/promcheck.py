"""A real Prometheus for tests: started on a free port with a config we write, queried over its HTTP API."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rules(directory: Path, for_: str = "0s") -> list[Path]:
    """Copies of the shipped rule files with every alert's ``for`` set to ``for_``
    (the expressions unchanged), so alerts fire within a short test."""
    out = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        target = directory / path.name
        target.write_text(re.sub(r"^(\s+)for: \S+$", rf"\g<1>for: {for_}", path.read_text(), flags=re.M))
        out.append(target)
    return out


class Prometheus:
    """``prometheus`` scraping ``target`` every ``interval`` with the test rules."""

    def __init__(self, binary: str, workdir: Path, target: str, interval: str = "1s") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        rules = test_rules(workdir)
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(p) for p in rules],
            # The job of deploy/prometheus/prometheus.yml: the alerts name it.
            "scrape_configs": [{"job_name": "foundation", "static_configs": [{"targets": [target]}]}],
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        self._log = self.log.open("w")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({self.proc.returncode}): {self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)  # an external process's readiness: nothing to wait on but its endpoint
        raise AssertionError(f"prometheus not ready in {timeout}s: {self.log.read_text()}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now (raises with Prometheus' error if it does not evaluate)."""
        body = self._get("/api/v1/query", {"query": expr})
        if body.get("status") != "success":
            raise AssertionError(f"{expr}: {body}")
        return body["data"]["result"]

    def firing(self) -> set[str]:
        return {a["labels"]["alertname"] for a in self._get("/api/v1/alerts")["data"]["alerts"] if a["state"] == "firing"}

    def rules(self) -> list[dict[str, Any]]:
        return [r for g in self._get("/api/v1/rules")["data"]["groups"] for r in g["rules"]]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
