"""Percentiles and report rows shared by the benchmarks."""

from __future__ import annotations

import statistics


def quantile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def p50_p99_ms(samples: list[float]) -> tuple[float, float]:
    """Median and p99 of ``samples`` in seconds, as milliseconds."""
    return statistics.median(samples) * 1000, quantile(samples, 0.99) * 1000


def row(label: str, samples: list[float], baseline: list[float] | None = None, width: int = 34) -> str:
    """``label  p50 … ms  p99 … ms  [baseline p50 … ms  ratio …x]``."""
    p50, p99 = p50_p99_ms(samples)
    line = f"  {label:<{width}} p50 {p50:8.2f} ms   p99 {p99:8.2f} ms"
    if baseline:
        b50, _ = p50_p99_ms(baseline)
        line += f"   baseline p50 {b50:6.2f} ms   ratio {p50 / b50:5.1f}x"
    return line
