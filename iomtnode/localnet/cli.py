"""``iomtnode localnet``: run N real nodes on loopback, watch them, and break them on purpose.

Results go to stdout (one JSON object with ``--json``); logs and the live table to stderr.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import structlog
import trio
import typer

from ..client import ApiError
from ..config import ConfigError
from ..core.genesis import GenesisError
from ..home import HomeError
from ..service import TERMINATED_EXIT, Terminated, single_exception, stop_on_sigterm
from . import procs, topology
from .chaosrun import DURATION_S, run_scenario
from .errors import LocalnetDirError
from .invariants import InvariantError
from .layout import DEFAULT_BASE_PORT, MAX_NODES, LocalnetError, Manifest, prepare
from .net import Localnet
from .netns import require_tools
from .rpc import NodeUnreachable
from .scenarios import SCENARIOS, Step
from .suite import ChaosManifest, run_suite
from .table import HEADERS, row_values, show_live

log = structlog.get_logger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

localnet_app = typer.Typer(
    help="Run N real `iomtnode run` processes on loopback, with chaos controls.\n\n"
         "Quick start: `iomtnode localnet up --nodes 4` (Ctrl-C stops it), or "
         "`iomtnode localnet prepare --nodes 4 --dir localnet && cd localnet && honcho start`.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

DirOpt = Annotated[Path, typer.Option("--dir", help="The localnet directory (holds "
                                      "localnet.json and one home per node).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
DEFAULT_DIR = Path("localnet")
REPORTS_FILE = "reports.jsonl"  # chaos --manifest: one report per line, as each run ends
EXPECTED = (LocalnetError, HomeError, GenesisError, ConfigError, OSError)


def command(name: str) -> Callable[[F], F]:
    """Register a command whose --help shows its docstring's paragraphs reflowed."""
    def register(fn: F) -> F:
        doc = inspect.getdoc(fn) or ""
        text = "\n\n".join(" ".join(p.split()) for p in doc.split("\n\n"))
        localnet_app.command(name, help=text)(fn)
        return fn
    return register


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run_trio(fn: Any, *args: Any) -> Any:
    """Run ``fn`` under trio; expected failures become ``error: ...`` and exit 1 (the localnet
    failed) or 2 (a --dir it cannot use, as ``prepare`` and ``down`` exit)."""
    try:
        return trio.run(fn, *args)
    except (Exception, KeyboardInterrupt) as raised:  # re-raised unless expected
        exc = single_exception(raised)
        if isinstance(exc, KeyboardInterrupt):
            fail("interrupted", 130)
        if isinstance(exc, Terminated):
            fail(str(exc), TERMINATED_EXIT)
        if isinstance(exc, InvariantError):
            raise exc from None  # the caller reports it
        if isinstance(exc, ApiError):
            fail(f"a node refused: {exc.message} (code {exc.code}); admin methods such as "
                 f"admin_refuse_peers need a node with the p2p admin API", 1)
        if isinstance(exc, NodeUnreachable):
            fail(f"a node did not answer: {exc}", 1)
        if isinstance(exc, LocalnetDirError):
            fail(str(exc))  # the operator's --dir: 2, as prepare and down say it
        if isinstance(exc, EXPECTED):
            fail(str(exc), 1)
        raise


def emit(result: Any, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(result, sort_keys=True) if as_json else text)


def _node_lines(manifest: Manifest) -> str:
    return "\n".join(
        f"{n.name:<7} {'authority' if n.authority else 'follower ':<9} "
        f"pid {n.proc.pid if n.proc else '-':<8} api {n.api}  p2p {n.p2p}  home {n.home}"
        for n in manifest.nodes)


def _manifest_json(manifest: Manifest) -> dict[str, Any]:
    doc = manifest.to_json()
    for node in doc["nodes"]:
        node.pop("admin_token")  # it stays in the 0600 localnet.json, not in terminal output
    return doc


@command("prepare")
def prepare_cmd(
    nodes: Annotated[int, typer.Option(min=1, max=MAX_NODES, help="Number of nodes.")] = 4,
    directory: DirOpt = DEFAULT_DIR,
    authorities: Annotated[int | None, typer.Option(
        min=1, help="The first K nodes are authorities (default: all).")] = None,
    base_port: Annotated[int, typer.Option(
        min=0, max=65535, help="First port to try; two free ports per node (api, p2p). "
                               "0: free ports picked at random below the OS's ephemeral range.")
    ] = DEFAULT_BASE_PORT,
    as_json: JsonOpt = False,
) -> None:
    """Create node homes sharing one genesis, fixed loopback ports and localnet.json.

    Starts nothing: run the nodes with `localnet up --dir DIR`, or without Python
    supervision with `cd DIR && honcho start` (DIR/Procfile is written too).
    """
    try:
        manifest = prepare(directory, nodes, authorities=authorities, base_port=base_port)
    except EXPECTED as exc:
        fail(str(exc))
    emit(_manifest_json(manifest), as_json,
         f"prepared {manifest.dir} ({manifest.chain_id}, genesis "
         f"{manifest.genesis_hash[:16]}...)\n{_node_lines(manifest)}\n"
         f"run: iomtnode localnet up --dir {directory}   or   cd {directory} && honcho start")


@command("up")
def up_cmd(
    nodes: Annotated[int | None, typer.Option(
        min=1, max=MAX_NODES, help="Number of nodes for a new DIR (default 4; an existing DIR "
                                   "keeps its own).")] = None,
    directory: DirOpt = DEFAULT_DIR,
    authorities: Annotated[int | None, typer.Option(
        min=1, help="For a new DIR: the first K nodes are authorities (default: all).")
    ] = None,
    devices: Annotated[int, typer.Option(
        min=0, max=10_000, help="Simulated devices streaming readings to node1 (0: none).")
    ] = 0,
    rate: Annotated[float, typer.Option(min=0.1, help="Readings per second in total.")] = 50.0,
    base_port: Annotated[int, typer.Option(
        min=0, max=65535, help="For a new DIR: first port to try (0: free ports picked at "
                               "random below the OS's ephemeral range).")
    ] = DEFAULT_BASE_PORT,
    detach: Annotated[bool, typer.Option(
        "--detach", help="Start the nodes in the background and return once they answer; "
                         "stop them with `localnet down`.")] = False,
    netns: Annotated[bool, typer.Option(
        "--netns", help="Run each node in its own network namespace on a bridge, with its "
                        "own IP (10.77.S.N), so faults drop or delay real packets. Needs root, "
                        "`ip` and `nft` (apt-get install -y iproute2 nftables).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Start the localnet in DIR (creating it if new) and show a live table until Ctrl-C.

    The table (on stderr, every second) shows each node's status (up, paused, down),
    height, finalized height, peers and readings/s. Ctrl-C or SIGTERM stops every process
    (and with --netns removes the namespaces and the bridge).
    Node i logs to DIR/nodeI/node.log; DIR/localnet.json lists pids, URLs and admin tokens.
    """
    async def go() -> None:
        async with Localnet.start(nodes, path=directory, authorities=authorities,
                                  devices=devices, rate=rate, base_port=base_port,
                                  supervisor=not detach, netns=netns) as net:
            m = net.manifest
            emit(_manifest_json(m), as_json,
                 f"localnet {m.dir} up ({m.chain_id})\n{_node_lines(m)}" +
                 (f"\nstop it with: iomtnode localnet down --dir {directory}" if detach else ""))
            if detach:
                net.detach()
                return
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(show_live, net)
                    async for signum in signals:
                        log.info("signal_received", signal=signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()
                        break

    run_trio(go)


@command("down")
def down_cmd(directory: DirOpt = DEFAULT_DIR, as_json: JsonOpt = False) -> None:
    """Stop a localnet by the pids in DIR/localnet.json: SIGTERM, wait, then SIGKILL.

    Stops a foreground `localnet up` too. Pids that are already gone (or now name another
    process) are skipped. For a --netns localnet, then removes its delay proxies,
    namespaces, veths and bridge (also those a crashed `localnet up` left).
    """
    try:
        manifest = Manifest.load(directory.resolve())
    except LocalnetError as exc:
        fail(str(exc))
    stopped: list[dict[str, Any]] = []
    if manifest.supervisor is not None:  # it stops its own nodes; then we sweep the rest
        for pid, result in procs.stop_refs_sync([manifest.supervisor],
                                                grace_s=procs.STOP_GRACE_S * 2).items():
            stopped.append({"name": "supervisor", "pid": pid, "result": result})
        manifest = Manifest.load(manifest.dir)
    groups = [[("simulator", manifest.simulator)] if manifest.simulator else [],
              [(n.name, n.proc) for n in manifest.nodes if n.proc is not None]]
    for group in groups:
        results = procs.stop_refs_sync([ref for _, ref in group if ref is not None])
        stopped += [{"name": name, "pid": ref.pid, "result": results[ref.pid]}
                    for name, ref in group if ref is not None]
    manifest.simulator = manifest.supervisor = None
    for node in manifest.nodes:
        node.proc = None
    manifest.save()
    removed: list[str] = []
    if manifest.netns is not None or manifest.proxies:
        try:
            removed = topology.teardown(manifest)
        except LocalnetError as exc:
            hint = (f"; removing namespaces needs root: sudo iomtnode localnet down --dir "
                    f"{manifest.dir}" if os.geteuid() != 0 else "")
            fail(f"{exc}{hint}", 1)
    lines = [f"{s['name']:<10} pid {s['pid']:<8} {s['result']}" for s in stopped]
    lines += [f"removed {name}" for name in removed]
    emit({"dir": str(manifest.dir), "stopped": stopped, "removed": removed}, as_json,
         "\n".join(lines) or f"nothing was running in {manifest.dir}")


@command("status")
def status_cmd(directory: DirOpt = DEFAULT_DIR, as_json: JsonOpt = False) -> None:
    """Show each node of a localnet: up/paused/down, height, finalized height, peers, pid."""
    async def go() -> list[dict[str, Any]]:
        async with Localnet.attach(directory) as net:
            return await net.snapshot()

    rows = run_trio(go)
    shown = [i for i, h in enumerate(HEADERS) if h != "readings/s"]  # needs two samples
    lines = []
    for cells in [HEADERS, *(row_values(row, None) for row in rows)]:
        lines.append("  ".join(f"{cells[i]:<{28 if i >= 7 else 8}}" for i in shown).rstrip())
    emit({"dir": str(directory.resolve()), "nodes": rows}, as_json, "\n".join(lines))


def describe_run(report: dict[str, Any]) -> str:
    """One run's report as a few readable lines."""
    head = f"{report['scenario']} seed {report['seed']}:"
    if "skipped" in report:
        return f"{head} skipped: {report['skipped']}"
    if "error" in report:
        return f"{head} FAILED: {report['error']} (see {report.get('dir', 'its directory')})"
    lines = [f"{head} {'ok' if report['ok'] else 'VIOLATED'}"]
    for name, f in report["invariants"].items():
        bound = "" if f["bound"] is None else f"  (bound {f['bound']})"
        lines.append(f"  {name} {'ok ' if f['ok'] else 'FAIL'} {json.dumps(f['figure'])}{bound}")
        lines += [f"       {d}" for d in f["detail"]]
    return "\n".join(lines)


@command("chaos")
def chaos_cmd(
    manifest: Annotated[Path | None, typer.Option(
        help="A chaos manifest (TOML: scenarios, seeds, durations, load, bounds); each run "
             "gets a fresh localnet in DIR/<scenario>-s<seed>. Without it: disrupt the "
             "running localnet in DIR.")] = None,
    scenarios: Annotated[list[str] | None, typer.Option(
        "--scenario", metavar="NAME", help=f"Run only this scenario (repeatable). One of: "
                           f"{', '.join(SCENARIOS)}.")] = None,
    seeds: Annotated[int | None, typer.Option(
        min=1, help="With --manifest: run seeds 1..N instead of the manifest's.")] = None,
    seed: Annotated[int | None, typer.Option(
        show_default="1", help="Without --manifest: the plan's seed.")] = None,
    netns: Annotated[bool, typer.Option(
        "--netns", help="With --manifest: run each localnet in network namespaces (root), "
                        "so the scenarios that need them run too.")] = False,
    directory: DirOpt = DEFAULT_DIR,
    duration: Annotated[float | None, typer.Option(
        min=1.0, show_default=f"{DURATION_S:g}",
        help="Without --manifest: seconds per scenario.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run seeded chaos scenarios under load, then check invariants I1-I5 after each.

    I1 one block per height on every node; I2 every accepted reading committed exactly
    once on every node (or reported dropped); I3 finalization resumes within a bound once a
    quorum is connected; I4 every node reaches the same head within a bound; I5 peers, fds
    and RSS bounded, no connection to an address a peer left. Prints each run's figures (one
    JSON object with --json); exit 0 if every invariant held, 1 if any was violated. With
    --manifest, each run's report is also appended to DIR/reports.jsonl as soon as it is
    made. The whole catalog over 5 seeds:
    `iomtnode localnet chaos --manifest deploy/chaos/full.toml`.
    """
    chosen = list(scenarios or [])
    # an option of the other mode would be ignored: say so rather than run something else
    if manifest is None and (seeds is not None or netns):
        fail("--seeds and --netns choose how a --manifest runs; on the running localnet in "
             "--dir use --seed (its mode was chosen by `localnet up`)")
    if manifest is not None and (seed is not None or duration is not None):
        fail("--seed and --duration apply to the running localnet in --dir; with --manifest "
             "use --seeds N and the manifest's duration_s or [durations]")
    if manifest is None and not chosen:
        fail("name a --scenario (or give a --manifest)")
    for name in chosen:
        if name not in SCENARIOS:
            fail(f"unknown scenario {name!r}; one of {', '.join(SCENARIOS)}")

    def show(report: dict[str, Any]) -> None:
        if not as_json:
            typer.echo(describe_run(report))

    def show_plan(steps: list[Step]) -> None:
        if not as_json:
            typer.echo("plan:\n" + "\n".join("  " + s.describe() for s in steps))

    found: ChaosManifest | None = None
    if manifest is not None:
        try:  # a manifest that cannot run is a usage error (2), not a violation (1)
            found = ChaosManifest.load(manifest).select(chosen, seeds, netns)
        except LocalnetError as exc:
            fail(str(exc))

    async def suite(found: ChaosManifest) -> list[dict[str, Any]]:
        if found.netns:  # once, not as a failure of every run
            require_tools()
        directory.mkdir(parents=True, exist_ok=True)
        written = directory / REPORTS_FILE

        def show_and_keep(report: dict[str, Any]) -> None:
            with written.open("a") as out:  # a long suite's results survive its end
                out.write(json.dumps(report, sort_keys=True) + "\n")
            show(report)

        return await run_suite(found, directory, start=Localnet.start,
                               on_report=show_and_keep)

    async def attached() -> list[dict[str, Any]]:
        reports = []
        async with Localnet.attach(directory) as net:
            for name in chosen:
                reports.append(await run_scenario(
                    net, name, seed=1 if seed is None else seed,
                    duration_s=DURATION_S if duration is None else duration, on_plan=show_plan))
                show(reports[-1])
        return reports

    reports = (run_trio(stop_on_sigterm, attached) if found is None
               else run_trio(stop_on_sigterm, suite, found))
    ok = all(r["ok"] for r in reports)
    if as_json:
        typer.echo(json.dumps({"ok": ok, "runs": reports}, sort_keys=True))
    else:
        ran = [r for r in reports if "skipped" not in r]
        typer.echo(f"{len(ran)} runs, {len(reports) - len(ran)} skipped, "
                   f"{sum(not r['ok'] for r in reports)} with violations")
    if not ok:
        raise typer.Exit(1)
