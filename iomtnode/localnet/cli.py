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
from ..service import single_exception
from . import procs, topology
from .chaos import SCENARIOS, Step, run_scenario
from .invariants import InvariantError
from .layout import DEFAULT_BASE_PORT, LocalnetError, Manifest, prepare
from .net import Localnet
from .rpc import NodeUnreachable
from .table import HEADERS, row_values, show_live

log = structlog.get_logger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

localnet_app = typer.Typer(
    help="Run N real `iomtnode run` processes on loopback, with chaos controls.\n\n"
         "Quick start: `iomtnode localnet up --nodes 4` (Ctrl-C stops it), or "
         "`iomtnode localnet prepare --nodes 4 --dir localnet && honcho start`.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

DirOpt = Annotated[Path, typer.Option("--dir", help="The localnet directory (holds "
                                      "localnet.json and one home per node).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
DEFAULT_DIR = Path("localnet")
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
    """Run ``fn`` under trio; expected failures become ``error: ...`` and exit 1 or 2."""
    try:
        return trio.run(fn, *args)
    except (Exception, KeyboardInterrupt) as raised:  # re-raised unless expected
        exc = single_exception(raised)
        if isinstance(exc, KeyboardInterrupt):
            fail("interrupted", 130)
        if isinstance(exc, InvariantError):
            raise exc from None  # the caller reports it
        if isinstance(exc, ApiError):
            fail(f"a node refused: {exc.message} (code {exc.code}); admin methods such as "
                 f"admin_refuse_peers need a node with the p2p admin API", 1)
        if isinstance(exc, NodeUnreachable):
            fail(f"a node did not answer: {exc}", 1)
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
    nodes: Annotated[int, typer.Option(min=1, max=64, help="Number of nodes.")] = 4,
    directory: DirOpt = DEFAULT_DIR,
    authorities: Annotated[int | None, typer.Option(
        min=1, help="The first K nodes are authorities (default: all).")] = None,
    base_port: Annotated[int, typer.Option(
        min=0, max=65535, help="First port to try; two free ports per node (api, p2p). "
                               "0: ports the OS picks.")
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
        min=1, max=64, help="Number of nodes for a new DIR (default 4; an existing DIR keeps "
                            "its own).")] = None,
    directory: DirOpt = DEFAULT_DIR,
    authorities: Annotated[int | None, typer.Option(
        min=1, help="For a new DIR: the first K nodes are authorities (default: all).")
    ] = None,
    devices: Annotated[int, typer.Option(
        min=0, max=10_000, help="Simulated devices streaming readings to node1 (0: none).")
    ] = 0,
    rate: Annotated[float, typer.Option(min=0.1, help="Readings per second in total.")] = 50.0,
    base_port: Annotated[int, typer.Option(
        min=0, max=65535, help="For a new DIR: first port to try (0: ports the OS picks).")
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


@command("chaos")
def chaos_cmd(
    scenario: Annotated[str, typer.Option(
        help=f"One of: {', '.join(SCENARIOS)}.")],
    directory: DirOpt = DEFAULT_DIR,
    seed: Annotated[int, typer.Option(help="Seed of the plan: same seed, same steps.")] = 1,
    duration: Annotated[float, typer.Option(min=1.0, help="Seconds of chaos.")] = 30.0,
    k: Annotated[int, typer.Option(
        min=0, help="At the end every node must be within K blocks of the highest head.")] = 3,
    settle: Annotated[float, typer.Option(
        min=0.0, help="Seconds the network may take to agree again after the last step.")
    ] = 20.0,
    as_json: JsonOpt = False,
) -> None:
    """Disrupt a running localnet (from DIR/localnet.json) by a seeded plan, then check it.

    Prints the planned steps first, logs each step as it runs, and at the end checks the
    invariants: the same block hash at every common height on every running node, and every
    head within K of the highest. Exit 0 if they hold, 1 if violated (with the details).
    """
    if scenario not in SCENARIOS:
        fail(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")

    def show_plan(steps: list[Step]) -> None:
        if not as_json:
            typer.echo(f"plan ({scenario}, seed {seed}, {duration:g} s):")
            typer.echo("\n".join("  " + s.describe() for s in steps))

    def show_step(step: Step, result: Any) -> None:
        if not as_json:
            typer.echo(f"done {step.describe()}" + (f" -> {result}" if result else ""))

    async def go() -> dict[str, Any]:
        async with Localnet.attach(directory) as net:
            return await run_scenario(net, scenario, seed=seed, duration_s=duration, k=k,
                                      settle_s=settle, on_plan=show_plan, on_step=show_step)

    try:
        report = run_trio(go)
    except InvariantError as exc:
        emit({"ok": False, "violations": exc.violations, "invariants": exc.report}, as_json,
             str(exc))
        raise typer.Exit(1) from None
    inv = report["invariants"]
    emit({"ok": True, **report}, as_json,
         f"invariants held (k={k}, common height {inv['common_height']}, heights "
         f"{inv['heights']})")
