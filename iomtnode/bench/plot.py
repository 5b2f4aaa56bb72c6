"""Plot submit-to-final latency (p50, p99) against offered rate from a bench.json.

    python -m iomtnode.bench.plot bench.json out.png

Needs matplotlib: ``pip install 'iomtnode[plot]'``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TARGETS_MS = {"p50": 100.0, "p99": 200.0}  # at 1,000 readings/s (docs/performance.md)
USAGE = "usage: python -m iomtnode.bench.plot BENCH_JSON OUT_PNG"


def series(result: dict[str, Any]) -> dict[str, list[float]]:
    """From a bench result: offered rates and, for each, achieved rate, p50 and p99 (ms),
    ascending by offered rate; points without a latency (nothing finalized) are left out."""
    points = sorted((p for p in result["latency_by_rate"]
                     if p["p50"] is not None and p["p99"] is not None),
                    key=lambda p: p["offered_rate"])
    return {
        "offered": [float(p["offered_rate"]) for p in points],
        "achieved": [float(p["achieved_rate"]) for p in points],
        "p50": [float(p["p50"]) for p in points],
        "p99": [float(p["p99"]) for p in points],
    }


def title(result: dict[str, Any]) -> str:
    return (f"iomtnode bench: {result['nodes']} nodes, {result['cores']} cores; ceiling "
            f"{result['ceiling_readings_per_s']:,}/s, throughput "
            f"{result['throughput_readings_per_s'] or 0:,}/s")


def plot(result: dict[str, Any], out: Path) -> None:
    """Write a PNG of latency p50/p99 against offered rate (log-log), with the targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator, StrMethodFormatter

    data = series(result)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for key, style in (("p50", "o-"), ("p99", "s-")):
        ax.plot(data["offered"], data[key], style, label=f"{key} submit-to-final")
        ax.axhline(TARGETS_MS[key], linestyle=":", linewidth=1, color="grey")
        ax.annotate(f"{key} target {TARGETS_MS[key]:,.0f} ms", (1.0, TARGETS_MS[key]),
                    xycoords=("axes fraction", "data"), textcoords="offset points",
                    xytext=(-4, 3), ha="right", fontsize=8, color="grey")
    for x, y, achieved in zip(data["offered"], data["p99"], data["achieved"], strict=True):
        ax.annotate(f"{achieved:,.0f}/s", (x, y), textcoords="offset points", xytext=(-4, 8),
                    ha="right", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.margins(x=0.08, y=0.12)
    ax.xaxis.set_major_locator(FixedLocator(data["offered"]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.tick_params(axis="x", labelrotation=30)
    for axis_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("offered readings/s (point labels: finalized readings/s achieved)")
    ax.set_ylabel("latency, ms")
    ax.set_title(title(result), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        result = json.loads(Path(args[0]).read_text())
        series(result)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: cannot read a bench result from {args[0]}: {exc!r}", file=sys.stderr)
        return 2
    try:
        plot(result, Path(args[1]))
    except ImportError:
        print("error: the plot needs matplotlib: pip install 'iomtnode[plot]'", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
