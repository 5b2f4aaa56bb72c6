"""The benchmark's parts without node processes: the plan of phases, the figures computed from
samples, the result object, the end table, the plot's data, the CLI's refusals, and the
localnet home a bootstrap node gets, a node's CPU with its workers'."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest
import structlog
from rich.console import Console
from typer.testing import CliRunner

from iomtnode.bench import plot
from iomtnode.bench.machine import ed25519_verify_rate, proc_usage, tree_cpu_s
from iomtnode.bench.phase import Phase
from iomtnode.bench.plan import (
    FIXED,
    SATURATION,
    SWEEP,
    Outcome,
    PhaseSpec,
    Plan,
    parse_rates,
    saturation_offer,
)
from iomtnode.bench.report import result_table
from iomtnode.bench.summary import Machine, summarize
from iomtnode.cli import app
from iomtnode.config import load_config
from iomtnode.home import Home
from iomtnode.localnet.layout import Manifest, add_node_home, prepare

# ---- the plan --------------------------------------------------------------------------


def test_default_plan_shares_the_duration_and_ends_at_saturation():
    phases = Plan().phases(ceiling=7000)
    assert [(p.kind, p.rate) for p in phases] == [
        (FIXED, 1000), (SWEEP, 250), (SWEEP, 500), (SWEEP, 2000), (SATURATION, 8400)]
    assert sum(p.duration_s for p in phases) == pytest.approx(30)
    assert phases[0].duration_s == pytest.approx(12)  # 40% fixed
    assert phases[-1].duration_s == pytest.approx(7.5)  # 25% saturation
    assert [p.duration_s for p in phases[1:4]] == pytest.approx([3.5] * 3)  # 35% shared


def test_sweep_rates_at_saturation_or_the_fixed_rate_are_left_out():
    plan = Plan(duration_s=10, sweep_rates=(1000, 2000, 9000), saturation_rate=2000)
    phases = plan.phases(ceiling=1e6)
    assert [(p.kind, p.rate) for p in phases] == [(FIXED, 1000), (SATURATION, 2000)]
    assert sum(p.duration_s for p in phases) == pytest.approx(10)  # no sweep: 40:25
    assert phases[0].duration_s == pytest.approx(10 * 0.4 / 0.65)


@pytest.mark.parametrize(("plan", "kind", "mode"), [
    (Plan(duration_s=20, fixed_rate=300, sweep_rates=(), saturate=False), FIXED, "rate"),
    (Plan(duration_s=20, fixed_rate=None, sweep_rates=(), saturate=True), SATURATION,
     "saturate"),
])
def test_one_phase_alone_gets_the_whole_duration(plan, kind, mode):
    assert plan.mode == mode
    [phase] = plan.phases(ceiling=5000)
    assert phase.kind == kind and phase.duration_s == 20


def test_saturation_offer_is_capped_only_after_node1_pushed_back():
    calm = [Outcome(12_000, 11_900, 950.0), Outcome(7000, 6900, 1900.0)]
    assert saturation_offer(Plan(), 7000, calm) == (8400.0, "1.2 x the localnet ceiling")
    assert saturation_offer(Plan(), 7000, [])[0] == 8400.0  # --saturate alone
    pushed = [Outcome(12_000, 11_800, 738.0), Outcome(7000, 3990, 657.0)]
    rate, rule = saturation_offer(Plan(), 7000, pushed)
    assert rate == 3 * 738.0 and "pushed back" in rule
    assert saturation_offer(Plan(), 1000, pushed)[0] == 1200.0  # the cap never raises it
    explicit = Plan(saturation_rate=5000)
    assert saturation_offer(explicit, 7000, pushed) == (5000.0, "--saturation-rate")


def test_verify_rate_is_the_best_slice():
    rate = ed25519_verify_rate(0.1, slices=2)
    assert 100 < rate < 10_000_000  # verifications/s on one core, whatever the machine


def test_a_nodes_cpu_counts_its_worker_processes_live_and_exited():
    """A node verifies in worker processes too: its CPU figure includes theirs."""
    import subprocess
    import sys

    def tree_now() -> float:
        usage = proc_usage(os.getpid())
        assert usage is not None
        return tree_cpu_s(os.getpid(), usage)

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    child = subprocess.Popen([sys.executable, "-c", burn + "\ntime.sleep(30)"])
    try:
        own = proc_usage(os.getpid())
        assert own is not None
        deadline = time.monotonic() + 20
        while tree_now() - own.cpu_s < 0.25:
            assert time.monotonic() < deadline, "the live child's CPU is not counted"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
    subprocess.run([sys.executable, "-c", burn], check=True)  # exited and waited for
    own = proc_usage(os.getpid())
    assert own is not None and tree_now() - own.cpu_s >= 0.5


def test_parse_rates():
    assert parse_rates("250, 500,2000") == (250.0, 500.0, 2000.0)
    assert parse_rates("") == ()
    with pytest.raises(ValueError):
        parse_rates("100,-5")
    with pytest.raises(ValueError):
        parse_rates("fast")


# ---- figures from samples --------------------------------------------------------------


def make_phase(kind: str, rate: float, *, committed: int, elapsed: float, lat: float,
               devices: int = 2, base: int = 0) -> Phase:
    """A phase as if run on 2 nodes: node1 commits half the readings a second after the
    admissions, the rest a second later; node2 trails, then catches up in one second."""
    phase = Phase(PhaseSpec(kind, rate, 4.0), devices=devices, seed=1)
    total, start = base + devices + committed, base + devices
    phase.samples = [  # no commit points: the samples' own times are used
        (0.0, {"node1": base, "node2": base}, {}),
        (1.0, {"node1": start + committed // 2, "node2": start}, {}),
        (2.0, {"node1": total, "node2": start + committed // 4}, {}),
        (3.0, {"node1": total, "node2": total}, {}),
    ]
    phase.load = {"committed": committed, "accepted": committed, "elapsed_s": elapsed,
                  "latency_ms": {"p50": lat, "p99": 2 * lat, "max": 3 * lat}}
    snap = {"committed": base, "bytes_out": 1000, "cpu_s": 1.0, "rss_mb": 50.0,
            "commit_delay_ms": {}, "gossip_delay_ms": {}, "delivery_delay_ms": {}}
    phase.before = {"node1": snap, "node2": snap}
    phase.after = {n: {**snap, "committed": total, "bytes_out": 1000 + 300 * committed,
                       "cpu_s": 1.0 + committed * 0.001, "rss_mb": 60.0 + i}
                   for i, n in enumerate(("node1", "node2"))}
    return phase


def test_steady_rate_excludes_the_admissions_and_the_ramp():
    phase = make_phase(SATURATION, 500, committed=1000, elapsed=2.5, lat=100)
    assert phase.steady_rate("node1") == pytest.approx(500)  # 502 -> 1002 in 1 s
    assert phase.steady_rate("node2") == pytest.approx(750)  # 252 -> 1002 in 1 s
    assert phase.achieved_rate == pytest.approx(400)
    assert phase.finalized == 1000


def test_steady_rate_is_timed_by_the_nodes_commit_points():
    """Each sample lands some time after the node's latest commit; the rate comes from the
    commits (node clock) the node reports, not from when the samples were taken."""
    phase = Phase(PhaseSpec(SATURATION, 1000, 4.0), devices=2, seed=1)
    commits = [(100.0, 0), (100.2, 502), (101.0, 1302), (101.5, 1802), (101.5, 1802)]
    phase.samples = [(5.0 + 0.5 * i, {"node1": count}, {"node1": (at, count)})
                     for i, (at, count) in enumerate(commits)]
    # 502 -> 1802 between the commits at 100.2 and 101.5 (the samples: 5.5 and 6.5)
    assert phase.steady_rate("node1") == pytest.approx(1300 / 1.3)
    phase.samples[2] = (6.0, {"node1": 1302}, {})  # one sample without a point: sample times
    assert phase.steady_rate("node1") == pytest.approx(1300 / 1.0)


def test_summary_keys_and_derived_figures():
    phases = [make_phase(FIXED, 100, committed=400, elapsed=4.0, lat=50, base=0),
              make_phase(SWEEP, 50, committed=200, elapsed=4.0, lat=40, base=402),
              make_phase(SATURATION, 300, committed=1000, elapsed=5.0, lat=90, base=604)]
    final = {"node1": 1606, "node2": 1606}
    result = summarize(Plan(nodes=2, duration_s=12), Machine(2, 10_000), phases,
                       final_committed=final, non_readings=6, reading_size=200,
                       disk_bytes=320_000, bootstrap={"readings_per_s": 5000})
    assert result["ceiling_readings_per_s"] == 10_000
    assert result["throughput_readings_per_s"] == 500  # the slowest node's steady rate
    assert result["saturation"]["per_node_readings_per_s"] == {"node1": 500, "node2": 750}
    assert result["efficiency"] == 0.05
    assert result["readings_found"] == {"node1": 1600, "node2": 1600}
    assert result["readings_finalized"] == 1600 == result["readings_accepted"]
    assert result["wire_bytes_per_reading_per_node"] == 300.0  # from the fixed phase
    assert result["wire_ratio"] == 1.5
    assert result["cpu_s_per_reading"] == pytest.approx(0.002)  # two nodes x 1 ms
    assert result["rss_mb_max"] == 61.0 and result["disk_bytes_per_reading"] == 200
    assert [p["offered_rate"] for p in result["latency_by_rate"]] == [50, 100, 300]
    assert result["latency_ms"] == {"p50": 50, "p99": 100, "max": 150}
    assert result["bootstrap_readings_per_s"] == 5000
    json.dumps(result)  # serialisable as it is


def sample_result() -> dict:
    phases = [make_phase(FIXED, 1000, committed=4000, elapsed=4.2, lat=150),
              make_phase(SATURATION, 6000, committed=9000, elapsed=6.0, lat=4000, base=4002)]
    return summarize(Plan(nodes=2), Machine(2, 12_000), phases,
                     final_committed={"node1": 13_004, "node2": 13_003}, non_readings=4,
                     reading_size=189, disk_bytes=2_600_000,
                     bootstrap={"readings_per_s": 12_000})


# ---- the table and the plot ------------------------------------------------------------


def table_lines(result: dict) -> list[str]:
    console = Console(record=True, width=180)
    console.print(result_table(result))
    return console.export_text().splitlines()


def row(lines: list[str], label: str) -> str:
    return next(line for line in lines if label in line)


def test_table_shows_figures_targets_and_an_inconsistency():
    lines = table_lines(sample_result())
    text = "\n".join(lines)
    assert "efficiency = throughput / ceiling" in text and ">= 0.75" in text
    assert "p50 / p99 ms, 6,000/s offered (saturation)" in text
    assert "150 / 300" in text  # the fixed rate's p50 / p99
    assert "12,000" in row(lines, "bootstrap, readings/s")
    ratio = row(lines, "bootstrap / (verify/s x cores)")  # 12,000 / (2 x 12,000)
    assert "0.5" in ratio and ">= 0.8" in ratio and "NO" in ratio
    consistency = row(lines, "finalized; found")
    assert "13,000; 13,000, 12,999" in consistency and "NO" in consistency
    p50 = row(lines, "latency p50 ms at the fixed rate")
    assert "150" in p50 and "<= 100" in p50 and "NO" in p50
    p99 = row(lines, "latency p99 ms at the fixed rate")
    assert "300" in p99 and "NO" in p99


def test_the_gossip_and_cpu_targets_are_judged_at_1000_per_s():
    result = {**sample_result(), "cpu_s_per_reading": 0.0004,
              "follower_delivery_delay_ms": {"node2": {"p50": 3.0, "p99": 12.0},
                                             "node3": {"p50": 6.0, "p99": None}}}
    lines = table_lines(result)
    assert "6" in row(lines, "delivery p50") and "NO" in row(lines, "delivery p50")  # worst
    assert "12" in row(lines, "delivery p99") and "yes" in row(lines, "delivery p99")
    assert "yes" in row(lines, "CPU s per reading")


def test_latency_targets_are_judged_only_at_their_rates():
    low = {**sample_result(), "offered_rate": 100.0, "latency_by_rate": [
        {"offered_rate": 100.0, "kind": "fixed", "p50": 48.0, "p99": 90.0, "max": 99.0,
         "achieved_rate": 100.0}]}
    lines = table_lines(low)
    p50 = row(lines, "latency p50 ms at the fixed rate")
    assert "yes" not in p50 and "NO" not in p50
    assert "yes" not in row(lines, "CPU s per reading")
    assert "48" in row(lines, "at 100/s (--rate 100)") and "yes" in row(lines, "at 100/s (")
    at_1000 = table_lines(sample_result())
    cells = [c.strip() for c in row(at_1000, "at 100/s (").split("│")]
    assert cells[2:5] == ["-", "<= 50", ""]  # no phase at 100/s: no figure, no verdict


def test_plot_series_and_usage(tmp_path, capsys):
    data = plot.series(sample_result())
    assert data["offered"] == [1000.0, 6000.0]
    assert data["p50"] == [150.0, 4000.0] and data["p99"] == [300.0, 8000.0]
    assert data["achieved"] == [round(4000 / 4.2), 1500.0]
    assert plot.main([]) == 2 and "usage" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert plot.main([str(tmp_path / "bad.json"), str(tmp_path / "x.png")]) == 2


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "bench.json").write_text(json.dumps(sample_result()))
    assert plot.main([str(tmp_path / "bench.json"), str(tmp_path / "out.png")]) == 0
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- the CLI refuses before starting anything -------------------------------------------


@pytest.fixture
def cli() -> Iterator[CliRunner]:
    """A CliRunner; the app's callback points structlog at the runner's stderr, which is
    closed after each invoke, so the logging set-up is put back afterwards."""
    saved = structlog.get_config()
    yield CliRunner()
    structlog.configure(**saved)


def test_rate_and_saturate_are_exclusive(cli):
    result = cli.invoke(app, ["bench", "--rate", "100", "--saturate"])
    assert result.exit_code == 2 and "give one of them" in result.output


def test_an_earlier_runs_localnet_is_not_reused(cli, tmp_path):
    (tmp_path / "localnet").mkdir()
    result = cli.invoke(app, ["bench", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "earlier run" in result.output


def test_bad_sweep_is_refused(cli):
    result = cli.invoke(app, ["bench", "--sweep", "100,abc"])
    assert result.exit_code == 2 and "--sweep" in result.output


# ---- the bootstrap node's home ----------------------------------------------------------


def test_add_node_home_joins_the_chain_as_a_follower(tmp_path):
    manifest = prepare(tmp_path / "net", 2, base_port=None)
    entry = add_node_home(manifest)
    assert entry.name == "node3" and not entry.authority
    home = Home(entry.home)
    home.check()
    assert home.load_genesis().hash.hex() == manifest.genesis_hash
    assert home.load_key().public.hex() == entry.node_id not in {
        a.hex() for a in home.load_genesis().authorities}
    config = load_config(home.config_path, env={})
    assert set(config.bootnodes) == {n.p2p_listen for n in manifest.nodes[:2]}
    assert config.api_listen == entry.api_listen and config.p2p_listen == entry.p2p_listen
    assert len({n.api for n in manifest.nodes} | {n.p2p for n in manifest.nodes}) == 6
    on_disk = Manifest.load(manifest.dir)
    assert [n.name for n in on_disk.nodes] == ["node1", "node2", "node3"]
    assert on_disk.node("node3").admin_token == home.admin_token()


def test_verify_drift_is_the_fastest_over_the_slowest_measure():
    assert Machine(2, 10_000).verify_drift == 1.0
    steady = Machine(2, 10_000, verify_after_per_s=10_500,
                     verify_before_saturation_per_s=9_800)
    assert steady.verify_drift == pytest.approx(10_500 / 9_800)
    assert steady.ceiling(2) == 10_000  # the ceiling stays the first measure
    drifting = Machine(2, 9_600, verify_after_per_s=14_400,
                       verify_before_saturation_per_s=14_000)
    assert drifting.verify_drift == pytest.approx(1.5)


def test_table_flags_a_run_whose_machine_changed_speed():
    phases = [make_phase(FIXED, 1000, committed=4000, elapsed=4.2, lat=150),
              make_phase(SATURATION, 6000, committed=9000, elapsed=6.0, lat=4000, base=4002)]

    def drift_row(machine: Machine) -> str:
        result = summarize(Plan(nodes=2), machine, phases,
                           final_committed={"node1": 13_004, "node2": 13_004},
                           non_readings=4, reading_size=189, disk_bytes=2_600_000,
                           bootstrap={"readings_per_s": 12_000})
        console = Console(record=True, width=200)
        console.print(result_table(result))
        return next(line for line in console.export_text().splitlines() if "drift" in line)

    steady = drift_row(Machine(2, 12_000, verify_after_per_s=12_500,
                               verify_before_saturation_per_s=12_200))
    assert "1.042" in steady and "steady" in steady and "unreliable" not in steady
    drifting = drift_row(Machine(2, 9_000, verify_after_per_s=13_500,
                                 verify_before_saturation_per_s=12_000))
    assert "1.5" in drifting and "NO: efficiency unreliable" in drifting
