"""Several bench runs side by side: a table (Markdown) and a plot, by nodes or by round trip.

    python -m iomtnode.bench.sweep --by nodes n4.json n7.json n10.json n16.json [--plot OUT.png]
    python -m iomtnode.bench.sweep --by rtt lan.json wa20.json wa100.json [--plot OUT.png]

Each file is one ``bench.json``. The table goes to stdout; the plot needs matplotlib
(``pip install 'iomtnode[plot]'``). Latencies are at each run's fixed rate (``offered_rate``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

USAGE = ("usage: python -m iomtnode.bench.sweep --by nodes|rtt BENCH_JSON... "
         "[--plot OUT_PNG]")


def row(result: dict[str, Any]) -> dict[str, Any]:
    """One run's figures for the sweep (None where its phase did not run)."""
    lat = result.get("latency_ms") or {}
    rtt = float((result.get("network") or {}).get("rtt_ms") or 0.0)
    return {
        "nodes": result["nodes"],
        "rtt_ms": rtt,
        "measured_rtt_ms": (result.get("network") or {}).get("probe_node_to_node_ms",
                                                               {}).get("median"),
        "verify": result["verify_per_s_one_core"],
        "drift": result.get("verify_drift"),
        "ceiling": result["ceiling_readings_per_s"],
        "throughput": result["throughput_readings_per_s"],
        "efficiency": result["efficiency"],
        "rate": result["offered_rate"],
        "achieved": next((p["achieved_rate"] for p in result["latency_by_rate"]
                          if p["kind"] == "fixed"), None),
        "p50": lat.get("p50"),
        "p99": lat.get("p99"),
        "cpu_ms": round(result["cpu_s_per_reading"] * 1000, 2),
        "wire": result["wire_ratio"],
        "consistent": set(result["readings_found"].values()) == {result["readings_finalized"]},
    }


def _n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, int | float) else str(value)


def table(rows: list[dict[str, Any]], by: str) -> str:
    """A Markdown table, one line per run, in the order given."""
    head = ["N", "verify/s (one core)", "drift", "ceiling /s", "throughput /s", "efficiency",
            "fixed rate (finalized) /s", "p50 / p99 ms", "CPU ms per reading", "wire ratio"]
    if by == "rtt":
        head[1:1] = ["RTT ms (probe)", "p50 / p99 in RTTs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["nodes"]), _n(r["verify"]), _n(r["drift"], 2), _n(r["ceiling"]),
                 _n(r["throughput"]), _n(r["efficiency"], 3),
                 f"{_n(r['rate'])} ({_n(r['achieved'])})", f"{_n(r['p50'])} / {_n(r['p99'])}",
                 _n(r["cpu_ms"], 2), _n(r["wire"], 2)]
        if by == "rtt":
            rtt = r["rtt_ms"]
            multiple = (f"{r['p50'] / rtt:.1f} / {r['p99'] / rtt:.1f}"
                        if rtt and r["p50"] is not None else "-")
            cells[1:1] = [f"{_n(rtt)} ({_n(r['measured_rtt_ms'], 1)})", multiple]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], by: str, out: Path) -> None:
    """Three panels against nodes (or RTT): efficiency; p50 and p99 at the fixed rate; CPU
    per reading and wire ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "nodes" if by == "nodes" else "rtt_ms"
    xs = [r[key] for r in rows]
    label = "authorities (nodes)" if by == "nodes" else "round trip between nodes, ms"
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), dpi=110)
    eff = [(x, r["efficiency"]) for x, r in zip(xs, rows, strict=True)
           if r["efficiency"] is not None]
    axes[0].plot([x for x, _ in eff], [e for _, e in eff], "o-")
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel("efficiency (throughput / ceiling)")
    for k, style in (("p50", "o-"), ("p99", "s-")):
        axes[1].plot(xs, [r[k] for r in rows], style, label=f"{k} submit-to-final")
    for x, r in zip(xs, rows, strict=True):
        axes[1].annotate(f"{_n(r['achieved'])}/s", (x, r["p99"] or 0), fontsize=7,
                         textcoords="offset points", xytext=(0, 6), ha="center")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("latency at the fixed rate, ms (labels: finalized/s)")
    axes[1].legend(fontsize=8)
    axes[2].plot(xs, [r["cpu_ms"] for r in rows], "o-", label="CPU ms per reading, all nodes")
    axes[2].plot(xs, [r["wire"] for r in rows], "s-", label="wire ratio")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel(label)
        ax.set_xticks(xs)
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"iomtnode bench by {'nodes' if by == 'nodes' else 'round-trip time'}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    out = None
    if "--plot" in args:
        i = args.index("--plot")
        if i + 1 >= len(args):
            print(USAGE, file=sys.stderr)
            return 2
        out = Path(args.pop(i + 1))
        args.pop(i)
    if len(args) < 3 or args[0] != "--by" or args[1] not in ("nodes", "rtt"):
        print(USAGE, file=sys.stderr)
        return 2
    by, files = args[1], args[2:]
    try:
        rows = [row(json.loads(Path(f).read_text())) for f in files]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: cannot read a bench result: {exc!r}", file=sys.stderr)
        return 2
    print(table(rows, by))
    if out is not None:
        try:
            plot(rows, by, out)
        except ImportError:
            print("error: the plot needs matplotlib: pip install 'iomtnode[plot]'",
                  file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
