"""The table printed at the end of ``iomtnode bench`` (without ``--json``): each figure
beside issue 5's target."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.table import Table

from .summary import STEADY_DRIFT

# (label, how to read it from the result, target text, whether the target is met)
Row = tuple[str, Callable[[dict[str, Any]], Any], str, Callable[[Any], bool] | None]
TARGET_RATE = 1000.0  # the latency targets hold at this offered rate


def _lat(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda r: (r.get("latency_ms") or {}).get(key)


def _verdict(label: str, value: Any, met: Callable[[Any], bool] | None,
             result: dict[str, Any]) -> str:
    if met is None or value is None:
        return ""
    if "latency" in label and result["offered_rate"] != TARGET_RATE:
        return ""  # the latency targets are for 1,000 readings/s
    return "yes" if met(value) else "NO"


ROWS: list[Row] = [
    ("ed25519 verify/s, one core", lambda r: r["verify_per_s_one_core"], "", None),
    ("localnet ceiling, readings/s", lambda r: r["ceiling_readings_per_s"], "", None),
    ("throughput at saturation, readings/s", lambda r: r["throughput_readings_per_s"], "",
     None),
    ("efficiency = throughput / ceiling", lambda r: r["efficiency"], ">= 0.45",
     lambda v: v >= 0.45),
    ("latency p50 ms at the fixed rate", _lat("p50"), "<= 300 at 1,000/s", lambda v: v <= 300),
    ("latency p99 ms at the fixed rate", _lat("p99"), "<= 1,000 at 1,000/s",
     lambda v: v <= 1000),
    ("latency max ms at the fixed rate", _lat("max"), "", None),
    ("CPU s per reading, all nodes", lambda r: r["cpu_s_per_reading"], "", None),
    ("wire bytes per reading per node", lambda r: r["wire_bytes_per_reading_per_node"], "",
     None),
    ("wire ratio (/ encoded reading)", lambda r: r["wire_ratio"], "<= 1.5",
     lambda v: v <= 1.5),
    ("peak RSS per node, MB", lambda r: r["rss_mb_max"], "<= 200 at 1M readings stored",
     None),  # a bench run stores far fewer readings: not comparable
    ("disk bytes per stored reading", lambda r: r["disk_bytes_per_reading"], "", None),
    ("bootstrap, readings/s", lambda r: r["bootstrap_readings_per_s"], ">= 10,000",
     lambda v: v >= 10_000),
]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.6f}".rstrip("0") if abs(value) < 0.01 else f"{value:,.3f}".rstrip("0")
    return f"{value:,.0f}" if isinstance(value, int | float) else str(value)


def result_table(result: dict[str, Any]) -> Table:
    """Every headline figure, its target and whether it is met; then latency by rate.
    Latencies are submit-to-final."""
    title = (f"iomtnode bench: {result['nodes']} nodes, {result['cores']} cores, "
             f"fixed rate {_fmt(result['offered_rate'])}/s")
    table = Table(title=title, caption="latencies: submit to final, ms")
    for header in ("figure", "value", "target (issue 5)", "met"):
        table.add_column(header, justify="right" if header == "value" else "left")
    for label, read, target, met in ROWS:
        value = read(result)
        table.add_row(label, _fmt(value), target, _verdict(label, value, met, result))
    for point in result["latency_by_rate"]:
        table.add_row(f"p50 / p99 ms, {_fmt(point['offered_rate'])}/s offered ({point['kind']})",
                      f"{_fmt(point['p50'])} / {_fmt(point['p99'])}",
                      f"(achieved {_fmt(point['achieved_rate'])}/s)", "")
    network = result.get("network") or {}
    if network.get("rtt_ms"):
        probe = network["probe_node_to_node_ms"]["median"]
        table.add_row("round trip between nodes, ms (applied; probe median)",
                      f"{_fmt(network['rtt_ms'])}; {probe:,.1f}", "", "")
    drift = result.get("verify_drift")
    if drift is not None:
        # not a target of issue 5: whether this run's efficiency can be trusted
        table.add_row(f"verify/s drift over the run (fastest / slowest; steady <= "
                      f"{STEADY_DRIFT})", _fmt(drift), "",
                      "steady" if drift <= STEADY_DRIFT else "NO: efficiency unreliable")
    finalized, found = result["readings_finalized"], result["readings_found"]
    consistent = set(found.values()) == {finalized}
    table.add_row("readings finalized; found on each node", _fmt(finalized) + "; " + (
        f"all {len(found)}" if consistent else ", ".join(_fmt(v) for v in found.values())),
        "equal", "yes" if consistent else "NO")
    return table
