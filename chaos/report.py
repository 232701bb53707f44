"""A run's report: ``report.json`` and ``timeline.png``.

``report.json`` holds the verdict and every count of the checker, the fault
windows (start, end, label, heal, time to recover) and per-second series:
publishes acked / failed / unknown, results, and latency percentiles
(publish → ack, publish → result).

``timeline.png`` draws those series over time, the way Jepsen draws its
nemesis intervals: each fault window is a shaded band labelled with what
was done, over (top) throughput — acked publishes and results per second,
failed and unknown publishes per second — and (bottom) latency — every
publish's ack latency and every task's publish-to-result latency, log scale.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any

from chaos.history import ACKED
from chaos.run import RunResult


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(math.ceil(q * len(values))) - 1)]


def series(result: RunResult) -> list[dict[str, Any]]:
    """Per-second counts and latency percentiles over the run."""
    end = max([result.duration] + [a for _, a, _ in result.publishes] + [a for a, _ in result.results])
    bins = [{"t": i, "acked": 0, "failed": 0, "unknown": 0, "results": 0, "_ack": [], "_e2e": []} for i in range(int(end) + 1)]
    for sent, answered, outcome in result.publishes:
        b = bins[int(answered)]
        b[outcome] += 1
        if outcome == ACKED:
            b["_ack"].append(answered - sent)
    for arrived, latency in result.results:
        b = bins[int(arrived)]
        b["results"] += 1
        b["_e2e"].append(latency)
    for b in bins:
        ack, e2e = b.pop("_ack"), b.pop("_e2e")
        b["ack_p50_ms"] = _ms(_percentile(ack, 0.5))
        b["ack_p99_ms"] = _ms(_percentile(ack, 0.99))
        b["e2e_p50_ms"] = _ms(_percentile(e2e, 0.5))
        b["e2e_p99_ms"] = _ms(_percentile(e2e, 0.99))
    return bins


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def to_json(result: RunResult, **context: Any) -> dict[str, Any]:
    r = result.report
    return {
        "scenario": result.scenario,
        "seed": result.seed,
        "duration_s": result.duration,
        **context,
        "valid": r.valid,
        "expect_loss": result.expect_loss,
        "verdict": result.verdict(),
        "attempted": r.attempted, "acked": r.acked, "failed": r.failed, "unknown": r.unknown,
        "unknown_or_failed_found": r.recovered,
        "completed": r.completed, "redelivered": r.redelivered, "dead_lettered": r.dead_lettered,
        "lost": len(r.lost), "lost_ids": r.lost[:100],
        "unexpected": len(r.unexpected), "unexpected_ids": r.unexpected[:100],
        "duplicates_processed": r.duplicates_processed, "duplicates_stored": r.duplicates_stored,
        "missing_effects": r.missing_effects, "conflicting": len(r.conflicting),
        "max_time_to_recover_s": result.recovery_s,
        "time_to_drain_s": round(result.drain_s, 3),
        "faults": [
            {"start_s": round(w.start, 3), "end_s": round(w.end, 3), "nemesis": w.label, "heal": w.healed,
             "time_to_recover_s": None if w.recovery_s is None else round(w.recovery_s, 3)}
            for w in result.windows
        ],
        "notes": result.notes,
        "series": series(result),
    }


def plot(result: RunResult, path: Path) -> None:
    """Write the timeline (see the module doc) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    bins = series(result)
    t = [b["t"] + 0.5 for b in bins]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(14, 7), sharex=True, gridspec_kw={"height_ratios": [1, 1]})
    top.plot(t, [b["acked"] for b in bins], label="publishes acked /s", color="tab:blue")
    top.plot(t, [b["results"] for b in bins], label="results /s", color="tab:green")
    top.plot(t, [b["unknown"] + b["failed"] for b in bins], label="publishes failed or unknown /s", color="tab:red")
    top.set_ylabel("tasks per second")
    top.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8)
    ack = [(a, (a - s) * 1000) for s, a, o in result.publishes if o == ACKED]
    if ack:
        bottom.scatter([x for x, _ in ack], [y for _, y in ack], s=2, alpha=0.35, color="tab:blue", label="publish → ack")
    if result.results:
        bottom.scatter([a for a, _ in result.results], [max(lat, 1e-4) * 1000 for _, lat in result.results],
                       s=2, alpha=0.35, color="tab:green", label="publish → result")
    bottom.set_yscale("log")
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("seconds since the workload began")
    bottom.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, markerscale=4)
    for i, w in enumerate(result.windows):
        for ax in (top, bottom):
            ax.axvspan(w.start, max(w.end, w.start + 0.05), color="tab:orange", alpha=0.25, lw=0)
        top.annotate(w.label, xy=(w.start, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -10 - 11 * (i % 3)),
                     textcoords="offset points", fontsize=7, color="saddlebrown", va="top")
    verdict = result.verdict().removeprefix("verdict: ")
    fig.suptitle(f"{result.scenario} (seed {result.seed}, {result.duration:g}s): {verdict.split(' — ')[0]}\n"
                 + textwrap.fill(verdict.split(" — ", 1)[-1], 150), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(result: RunResult, directory: Path, **context: Any) -> tuple[Path, Path]:
    """Write ``report.json`` and ``timeline.png`` into ``directory``; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    report, timeline = directory / "report.json", directory / "timeline.png"
    report.write_text(json.dumps(to_json(result, **context), indent=2) + "\n")
    plot(result, timeline)
    return report, timeline
