"""Rendering the dashboards to JSON, writing them, checking them, listing their queries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from deploy.grafana.boards import DASHBOARDS

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    title: str
    expr: str


def _model(name: str) -> dict:
    built = DASHBOARDS[name]().build()
    return json.loads(json.dumps(built, cls=JSONEncoder))


def generate() -> dict[str, str]:
    """Every dashboard's JSON text, by name (deterministic: sorted keys, fixed indent)."""
    return {name: json.dumps(_model(name), indent=2, sort_keys=True) + "\n" for name in DASHBOARDS}


def write(directory: Path = DASHBOARD_DIR) -> list[Path]:
    """Write every dashboard to ``directory/<name>.json``; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in generate().items():
        path = directory / f"{name}.json"
        path.write_text(text)
        paths.append(path)
    return paths


def stale(directory: Path = DASHBOARD_DIR) -> list[str]:
    """Names of dashboards whose file is missing or differs from what the sources generate."""
    return [name for name, text in generate().items() if not (directory / f"{name}.json").exists()
            or (directory / f"{name}.json").read_text() != text]


def panel_queries(directory: Path = DASHBOARD_DIR) -> list[PanelQuery]:
    """Every panel's query in the committed dashboards, in order."""
    out = []
    for path in sorted(directory.glob("*.json")):
        model = json.loads(path.read_text())
        for panel in model.get("panels", []):
            for target in panel.get("targets", []):
                out.append(PanelQuery(path.stem, panel["title"], target["expr"]))
    return out
