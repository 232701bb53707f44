"""The committed dashboards are what their sources generate, and every panel is usable."""

from __future__ import annotations

import json
import re
from pathlib import Path

from deploy.grafana import DASHBOARD_DIR, generate, panel_queries

REPO = Path(__file__).resolve().parents[2]
NAMES = {"overview", "pools", "supervisor", "coordination", "nats"}


def test_committed_dashboards_are_current() -> None:
    generated = generate()
    assert set(generated) == NAMES
    for name, text in generated.items():
        committed = (DASHBOARD_DIR / f"{name}.json").read_text()
        assert committed == text, f"deploy/grafana/dashboards/{name}.json is stale: run `make dashboards`"


def test_generating_twice_gives_the_same_text() -> None:
    assert generate() == generate()


def test_every_panel_has_a_query_a_unit_a_description_and_a_link_to_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.*)$", readme, re.M)}
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        model = json.loads(path.read_text())
        assert {v["name"] for v in model["templating"]["list"]} >= {"datasource", "node"}, path.name
        panels = [p for p in model["panels"] if p["type"] != "row"]
        assert panels, path.name
        ids = [p["id"] for p in model["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        for p in panels:
            where = f"{path.name}: {p['title']}"
            assert len(p["targets"]) == 1 and p["targets"][0]["expr"], where
            assert p["fieldConfig"]["defaults"]["unit"], where
            assert p["description"], where
            (link,) = p["links"]
            anchor = link["url"].split("#", 1)[1]
            assert anchor in anchors, f"{where}: README has no section #{anchor}"


def test_queries_select_by_the_dashboard_variables() -> None:
    for q in panel_queries():
        assert "$node" in q.expr or "node=~" in q.expr, f"{q.dashboard}: {q.title}: {q.expr}"


def test_foundation_dashboards_check_says_the_committed_files_are_current() -> None:
    from supervisor.cli import main

    assert main(["dashboards", "--check"]) == 0
