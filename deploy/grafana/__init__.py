"""Grafana dashboards of Foundation, generated with grafana-foundation-sdk.

``python -m deploy.grafana`` (``make dashboards``) writes
``deploy/grafana/dashboards/<name>.json`` from :mod:`deploy.grafana.boards`;
``--check`` exits 1 when a committed file differs from what the sources
generate. :func:`panel_queries` lists every panel's query, for the test that
evaluates each against a real Prometheus.
"""

from deploy.grafana.generate import DASHBOARD_DIR, generate, panel_queries, write

__all__ = ["DASHBOARD_DIR", "generate", "panel_queries", "write"]
