"""``iomtnode simulate | bench``: load a node with simulated devices; benchmark a localnet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..core.crypto import SigningKey
from ..core.genesis import Genesis
from ..service import stop_on_sigterm
from .common import (
    DEFAULT_API,
    ApiOpt,
    CaOpt,
    JsonOpt,
    api_url,
    authority_key,
    emit,
    fail,
    run_async,
)

BENCH_HELP = (
    "Benchmark a localnet of real nodes against this machine's ed25519 ceiling.\n\n"
    "Measures the verify ceiling; submit-to-final latency, wire bytes and CPU at a fixed "
    "offered rate; latency at a few more rates; throughput at saturation (the slowest node's "
    "steady commit rate); then a fresh node's bootstrap. The default run takes one to two "
    "minutes on 2 cores.\n\n"
    "Progress goes to stderr; a table (with --json, one JSON object) to stdout. Every figure "
    "and JSON key is described in docs/performance.md.")


def simulate(
    homes: Annotated[list[Path], typer.Option(
        "--home", help="An authority's home: its key approves the simulated devices' "
                       "admission. Repeat it with other authorities' homes until the chain's "
                       "admission_threshold (in genesis.json) is met.")],
    api: ApiOpt = DEFAULT_API,
    api_ca: CaOpt = None,
    devices: Annotated[int, typer.Option(
        min=1, max=10_000, help="Simulated devices, each recording into a stream of its own."
    )] = 10,
    rate: Annotated[float, typer.Option(min=0.1, help="Readings per second in total.")] = 100,
    duration: Annotated[float, typer.Option(min=0.1, help="Seconds of streaming.")] = 10,
    seed: Annotated[int | None, typer.Option(help="Seed for device keys and vitals.")] = None,
    presign: Annotated[bool, typer.Option(
        help="Sign every reading before streaming (for benchmarks: the generator's CPU "
             "then does not limit the rate).")] = False,
    record: Annotated[Path | None, typer.Option(
        help="Append each accepted reading's id (hex, one a line, flushed per batch) to "
             "this file, so a checker can find every reading the node acknowledged.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Admit K simulated devices and stream signed vitals; report commits and latency.

    Every accepted reading ends up counted once: committed, dropped (with the reasons),
    still pending, or unknown to the node (lost). Counts are checked with get_tx_status,
    so a block notification the node or this client dropped does not skew them."""
    from ..sim.load import run_load

    key, genesis, approvers = _approvers(homes)
    stats = run_async(lambda: run_load(api_url(api), key, genesis.chain_id, devices=devices,
                                       rate=rate, duration_s=duration, seed=seed,
                                       presign=presign, record=record, ca=api_ca,
                                       approvers=approvers))
    result = stats.summary()
    lat = result["latency_ms"]
    emit(result, as_json,
         f"submitted {result['submitted']}  accepted {result['accepted']}  "
         f"rejected {result['rejected']}  committed {result['committed']}  "
         f"dropped {result['dropped']}  pending {result['pending']}  "
         f"unknown {result['unknown']}  unchecked {result['unchecked']}\n"
         f"latency ms  p50 {lat['p50']}  p99 {lat['p99']}  max {lat['max']}")


def _approvers(homes: list[Path]) -> tuple[SigningKey, Genesis, list[SigningKey]]:
    """The first home's key and genesis and the other homes' keys, once each: enough
    authorities of one chain to admit a device (its genesis' admission_threshold), or a
    clear error before anything is sent."""
    key, genesis = authority_key(homes[0])
    approvers: dict[bytes, SigningKey] = {}
    for home in homes[1:]:
        other, other_genesis = authority_key(home)
        if other_genesis.hash != genesis.hash:
            fail(f"{home} is of another chain than {homes[0]} ({other_genesis.chain_id})")
        if other.public != key.public:
            approvers[other.public] = other
    if 1 + len(approvers) < genesis.admission_threshold:
        fail(f"{genesis.chain_id} admits a device with the approvals of "
             f"{genesis.admission_threshold} authorities (admission_threshold in its "
             f"genesis), and {1 + len(approvers)} --home was given: give the home of "
             f"{genesis.admission_threshold} authorities")
    return key, genesis, list(approvers.values())


def bench(
    nodes: Annotated[int, typer.Option(min=1, max=16, help="Node processes.")] = 4,
    duration: Annotated[float, typer.Option(
        min=1, help="Total seconds of offered load over all timed phases (not per phase). "
                    "Default run: 40% fixed rate, 35% latency sweep, 25% saturation; with "
                    "--rate or --saturate that one phase gets all of it.")] = 30,
    rate: Annotated[float | None, typer.Option(
        min=1, help="Run only the fixed-rate phase, at this offered rate (readings/s).",
        show_default=False)] = None,
    saturate: Annotated[bool, typer.Option(
        "--saturate", help="Run only the saturation phase.")] = False,
    out: Annotated[Path | None, typer.Option(
        help="Write DIR/bench.json and keep the localnet in DIR/localnet.")] = None,
    as_json: JsonOpt = False,
    netns: Annotated[bool, typer.Option(
        "--netns", help="Every node in its own network namespace (root; needs `ip` and "
                        "`nft`).")] = False,
    rtt_ms: Annotated[float, typer.Option(
        min=0, max=2000, help="Round-trip time added between any two nodes, ms (through "
                              "the localnet's delay proxies; needs --netns).")] = 0.0,
    fixed_rate: Annotated[float, typer.Option(
        min=1, rich_help_panel="Advanced",
        help="The fixed-rate phase's offered rate in the default run.")] = 1000,
    sweep: Annotated[str, typer.Option(
        rich_help_panel="Advanced",
        help="The latency sweep's extra offered rates, comma-separated (the fixed and "
             "saturation phases are its other points; rates at or above saturation are "
             "skipped).")] = "250,500,2000",
    saturation_rate: Annotated[float | None, typer.Option(
        min=1, rich_help_panel="Advanced", show_default=False,
        help="Offered rate of the saturation phase (default: 1.2 x the localnet ceiling, "
             "or 3 x the best rate finalized if node1 pushed back in an earlier phase).")
    ] = None,
    devices: Annotated[int, typer.Option(
        min=1, max=10_000, rich_help_panel="Advanced",
        help="Simulated devices per phase.")] = 64,
) -> None:
    from rich.console import Console

    from ..bench.plan import Plan, parse_rates
    from ..bench.progress import rich_reporter
    from ..bench.report import result_table
    from ..bench.run import run_bench

    if rate is not None and saturate:
        fail("--rate R runs only the fixed-rate phase and --saturate only the saturation "
             "phase; give one of them, or neither for both")
    if rtt_ms and not netns:
        fail("--rtt-ms delays real links between nodes: add --netns (as root)")
    if netns:
        from ..localnet import LocalnetError
        from ..localnet.netns import require_tools

        try:
            require_tools()
        except LocalnetError as exc:
            fail(str(exc))
    if out is not None and (out / "localnet").exists():
        fail(f"{out / 'localnet'} exists (an earlier run's localnet); remove it or pick "
             f"another --out")
    try:
        sweep_rates = parse_rates(sweep)
    except ValueError as exc:
        fail(f"--sweep: {exc}")
    full = rate is None and not saturate
    plan = Plan(nodes=nodes, duration_s=duration, devices=devices,
                fixed_rate=None if saturate else (rate or fixed_rate),
                sweep_rates=sweep_rates if full else (), saturate=saturate or rate is None,
                saturation_rate=saturation_rate, netns=netns, rtt_ms=rtt_ms)
    with rich_reporter() as reporter:
        result = run_async(stop_on_sigterm, lambda: run_bench(plan, out_dir=out,
                                                               reporter=reporter))
    if out is not None:
        (out / "bench.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if as_json:
        emit(result, True)
    else:
        Console().print(result_table(result))
