"""Building blocks of the dashboards: one way to make a panel, its query and its link.

Every panel has exactly one query (``expr``), a unit, a description saying
what it shows, and a link from its title to the README section that defines
its metrics (``DOCS_URL`` + anchor). Queries select ``node=~"$node"`` and,
where a pool applies, ``pool=~"$pool"``; the Prometheus check substitutes
both with ``.*`` and ``$__rate_interval`` with a window of its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

# Where the README is served; set FOUNDATION_DOCS_URL when generating to point
# the panel links at your own copy (the committed files use the default).
DOCS_URL = os.environ.get("FOUNDATION_DOCS_URL", "README.md")
DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
NODE = 'node=~"$node"'
POOL = 'node=~"$node", pool=~"$pool"'


@dataclass(frozen=True)
class Spec:
    """One panel: its title, query, legend, unit, kind and README anchor."""

    title: str
    expr: str
    doc: str  # README anchor (without '#')
    description: str
    unit: str = "short"
    legend: str = ""
    kind: str = "timeseries"  # or "stat"
    width: int = 8
    warn: float | None = None  # thresholds: yellow from warn, red from crit
    crit: float | None = None
    stack: bool = False


def _thresholds(spec: Spec) -> db.ThresholdsConfig:
    steps = [dm.Threshold(value=None, color="green")]
    if spec.warn is not None:
        steps.append(dm.Threshold(value=spec.warn, color="yellow"))
    if spec.crit is not None:
        steps.append(dm.Threshold(value=spec.crit, color="red"))
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(steps)


def panel(spec: Spec) -> db.Panel:
    """The Grafana panel of ``spec``."""
    query = prometheus.Dataquery().expr(spec.expr).legend_format(spec.legend or "__auto").ref_id("A")
    link = db.DashboardLink("What this shows").url(f"{DOCS_URL}#{spec.doc}").target_blank(True)
    if spec.kind == "stat":
        p = stat.Panel().graph_mode(cm.BigValueGraphMode.AREA).color_mode(cm.BigValueColorMode.VALUE).height(5)
    else:
        p = (
            timeseries.Panel()
            .height(8)
            .line_width(1)
            .fill_opacity(10)
            .thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.LINE))
        )
        if spec.stack:
            p = p.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    return (
        p.title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .with_target(query)
        .unit(spec.unit)
        .thresholds(_thresholds(spec))
        .span(spec.width)
        .links([link])
    )


def variables(*, pool: bool = True) -> list[db.QueryVariable | db.DatasourceVariable]:
    """The datasource, node and (optionally) pool variables, all multi-valued with "All"."""
    out: list[db.QueryVariable | db.DatasourceVariable] = [
        db.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        db.QueryVariable("node")
        .label("Node")
        .datasource(DATASOURCE)
        .query("label_values(foundation_node_up, node)")
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .sort(dm.VariableSort.ALPHABETICAL_ASC),
    ]
    if pool:
        out.append(
            db.QueryVariable("pool")
            .label("Pool")
            .datasource(DATASOURCE)
            .query('label_values(foundation_pool_size{node=~"$node"}, pool)')
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
        )
    return out


def board(uid: str, title: str, description: str, rows: list[tuple[str, list[Spec]]], *, pool: bool = True) -> db.Dashboard:
    """A dashboard of rows of panels, with the common variables, time range and links."""
    d = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["foundation"])
        .refresh("10s")
        .time("now-1h", "now")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .variables(variables(pool=pool))
        .link(db.DashboardLink("Foundation").type(dm.DashboardLinkType.DASHBOARDS).tags(["foundation"]).as_dropdown(True).include_vars(True).keep_time(True))
    )
    ids = iter(range(1, 1000))
    for name, specs in rows:
        d = d.with_row(db.Row(name).id(next(ids)))
        for spec in specs:
            d = d.with_panel(panel(spec).id(next(ids)))
    return d


def rate(metric: str, selector: str, by: str = "", window: str = "$__rate_interval") -> str:
    """``sum by (by) (rate(metric{selector}[window]))``."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}{{{selector}}}[{window}]))"


def quantile(q: float, metric: str, selector: str, by: str = "") -> str:
    """The ``q`` quantile of histogram ``metric`` over ``$__rate_interval``."""
    keep = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({keep}) (rate({metric}_bucket{{{selector}}}[$__rate_interval])))"
