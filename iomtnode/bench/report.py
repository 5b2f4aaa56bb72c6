"""The table printed at the end of ``iomtnode bench`` (without ``--json``): each figure
beside its target (docs/performance.md, "Targets and where they stand")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.table import Table

from .summary import STEADY_DRIFT

# (label, how to read it from the result, target text, whether the target is met)
Row = tuple[str, Callable[[dict[str, Any]], Any], str, Callable[[Any], bool] | None]
TARGET_RATE = 1000.0  # the latency and CPU targets hold at this offered rate
LOW_RATE = 100.0  # and the low-rate latency target at this one (``--rate 100``)


def _lat(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda r: (r.get("latency_ms") or {}).get(key)


def _low_rate_p50(result: dict[str, Any]) -> Any:
    """The p50 of a fixed phase at :data:`LOW_RATE`, if the run had one."""
    return next((point["p50"] for point in result["latency_by_rate"]
                 if point["kind"] == "fixed" and point["offered_rate"] == LOW_RATE), None)


def _delivery(key: str) -> Callable[[dict[str, Any]], Any]:
    """The worst follower's gossip delivery delay (``key``: p50 or p99)."""
    def read(result: dict[str, Any]) -> Any:
        values = [w.get(key) for w in (result.get("follower_delivery_delay_ms") or {}).values()]
        return max((v for v in values if v is not None), default=None)
    return read


def _bootstrap_ratio(result: dict[str, Any]) -> Any:
    """Bootstrap against the verify rate of every usable core."""
    rate, one = result.get("bootstrap_readings_per_s"), result["verify_per_s_one_core"]
    return round(rate / (one * result["cores"]), 3) if rate and one else None


def _at_target_rate(result: dict[str, Any]) -> bool:
    """Whether the fixed phase (where latency and CPU are measured) ran at 1,000/s."""
    return result["offered_rate"] == TARGET_RATE and result.get("cost_phase") == "fixed"


def _verdict(label: str, value: Any, met: Callable[[Any], bool] | None,
             result: dict[str, Any]) -> str:
    if met is None or value is None:
        return ""
    if "1,000/s" in label and not _at_target_rate(result):
        return ""  # those targets are for 1,000 readings/s
    return "yes" if met(value) else "NO"


ROWS: list[Row] = [
    ("ed25519 verify/s, one core", lambda r: r["verify_per_s_one_core"], "", None),
    ("localnet ceiling, readings/s", lambda r: r["ceiling_readings_per_s"], "", None),
    ("throughput at saturation, readings/s", lambda r: r["throughput_readings_per_s"], "",
     None),
    ("efficiency = throughput / ceiling", lambda r: r["efficiency"], ">= 0.75",
     lambda v: v >= 0.75),
    ("latency p50 ms at the fixed rate (1,000/s)", _lat("p50"), "<= 100", lambda v: v <= 100),
    ("latency p99 ms at the fixed rate (1,000/s)", _lat("p99"), "<= 200", lambda v: v <= 200),
    ("latency max ms at the fixed rate", _lat("max"), "", None),
    ("latency p50 ms at 100/s (--rate 100)", _low_rate_p50, "<= 50", lambda v: v <= 50),
    ("gossip delivery p50 ms, worst follower (1,000/s)", _delivery("p50"), "<= 5",
     lambda v: v <= 5),
    ("gossip delivery p99 ms, worst follower (1,000/s)", _delivery("p99"), "<= 15",
     lambda v: v <= 15),
    ("CPU s per reading, all nodes (1,000/s)", lambda r: r["cpu_s_per_reading"], "<= 0.0005",
     lambda v: v <= 0.0005),
    ("wire bytes per reading per node", lambda r: r["wire_bytes_per_reading_per_node"], "",
     None),
    ("wire ratio (/ encoded reading)", lambda r: r["wire_ratio"], "<= 1.5",
     lambda v: v <= 1.5),
    ("peak RSS per node, MB", lambda r: r["rss_mb_max"], "<= 120 at 1M readings stored",
     None),  # a bench run stores far fewer readings: not comparable
    ("disk bytes per stored reading", lambda r: r["disk_bytes_per_reading"], "", None),
    ("bootstrap, readings/s", lambda r: r["bootstrap_readings_per_s"], "", None),
    ("bootstrap / (verify/s x cores)", _bootstrap_ratio, ">= 0.8", lambda v: v >= 0.8),
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
    for header in ("figure", "value", "target", "met"):
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
        # not a target: whether this run's efficiency can be trusted
        table.add_row(f"verify/s drift over the run (fastest / slowest; steady <= "
                      f"{STEADY_DRIFT})", _fmt(drift), "",
                      "steady" if drift <= STEADY_DRIFT else "NO: efficiency unreliable")
    finalized, found = result["readings_finalized"], result["readings_found"]
    consistent = set(found.values()) == {finalized}
    table.add_row("readings finalized; found on each node", _fmt(finalized) + "; " + (
        f"all {len(found)}" if consistent else ", ".join(_fmt(v) for v in found.values())),
        "equal", "yes" if consistent else "NO")
    return table
