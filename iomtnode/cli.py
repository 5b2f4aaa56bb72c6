"""The ``iomtnode`` command line (typer).

Results go to stdout (JSON with ``--json``), logs to stderr, so scripts can pipe.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import trio
import typer
from trio_websocket import HandshakeError as WsHandshakeError

from . import __version__, log
from .chain.chain import WrongChainError
from .client import ApiError, open_client
from .config import ConfigError
from .core.crypto import SigningKey, blake2b256
from .core.genesis import Genesis, GenesisError
from .core.receipt import ReceiptError, verify_receipt
from .core.tx import RevokeDevice, sign_tx
from .home import Home, HomeError, init_home, write_key
from .localnet.cli import localnet_app
from .service import single_exception
from .store import StoreError

app = typer.Typer(
    help="A permissioned proof-of-authority blockchain node for the Internet of Medical Things.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
device_app = typer.Typer(help="Device keys and their admission or revocation.",
                         no_args_is_help=True)
app.add_typer(device_app, name="device")
app.add_typer(localnet_app, name="localnet")

DEFAULT_API = "ws://127.0.0.1:7545/api/v1"
HomeOpt = Annotated[Path, typer.Option("--home", help="The node's home directory.")]
ApiOpt = Annotated[str, typer.Option("--api", help="The node's API URL.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def emit(result: dict[str, Any], as_json: bool, text: str | None = None) -> None:
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))
    else:
        typer.echo(text if text is not None else json.dumps(result, indent=2, sort_keys=True))


def api_url(value: str) -> str:
    """Accept ``host:port`` or a full ws:// URL; default the path to /api/v1."""
    if "://" not in value:
        value = f"ws://{value}"
    scheme, rest = value.split("://", 1)
    if "/" not in rest:
        value = f"{scheme}://{rest}/api/v1"
    return value


def run_async(fn: Any, *args: Any) -> Any:
    """Run a coroutine function under trio, turning expected failures into clear errors."""
    try:
        return trio.run(fn, *args)
    except Exception as raised:  # re-raised below unless it is an expected one
        exc = single_exception(raised)
        if isinstance(exc, ApiError):
            fail(f"the node refused: {exc.message} (code {exc.code})", 1)
        if isinstance(exc, StoreError | WrongChainError | ConfigError):
            fail(str(exc))
        if isinstance(exc, WsHandshakeError):
            fail(f"the node refused the connection: {exc}", 1)
        if isinstance(exc, OSError | ConnectionError):
            fail(f"cannot reach the node or bind its port: {exc}", 1)
        if isinstance(exc, trio.TooSlowError):
            fail("the node did not answer in time", 1)
        raise


@app.callback()
def main_options(
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    log_json: Annotated[bool | None, typer.Option(
        "--log-json/--log-console", help="Log format (default: console on a TTY, else JSON).",
        show_default=False)] = None,
) -> None:
    """iomtnode: run, inspect and load-test IoMT blockchain nodes."""
    try:
        log.configure(log_level, json=log_json)
    except ValueError as exc:
        fail(str(exc))


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def init(
    home: HomeOpt,
    chain_id: Annotated[str, typer.Option(help="Name of a new chain.")] = "iomt-local",
    genesis: Annotated[Path | None, typer.Option(
        help="Join an existing network with its genesis.json instead of making a new chain.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a node home: node key, config.toml, admin token and genesis.

    Without --genesis this makes a new one-authority chain whose authority is this node.
    """
    try:
        doc = Genesis.load(genesis) if genesis else None
        h = init_home(home, chain_id=chain_id, genesis=doc)
        g = h.load_genesis()
        result = {"home": str(home), "node_id": h.load_key().public.hex(),
                  "chain_id": g.chain_id, "genesis_hash": g.hash.hex()}
    except (HomeError, GenesisError, OSError) as exc:
        fail(str(exc))
    emit(result, as_json, f"initialized {home}\nnode id   {result['node_id']}\n"
                          f"chain     {g.chain_id} ({result['genesis_hash'][:16]}...)")


@app.command()
def run(
    home: HomeOpt,
    api: Annotated[str | None, typer.Option(help="API listen HOST:PORT (overrides config).")
                   ] = None,
    p2p: Annotated[str | None, typer.Option(help="P2P listen HOST:PORT (overrides config).")
                   ] = None,
) -> None:
    """Run a node until SIGINT or SIGTERM, then shut down cleanly."""
    from .node import Node
    from .service import run_until_signal
    from .tuning import tune_process

    try:
        h = Home(home)
        config = h.load_config({"api_listen": api, "p2p_listen": p2p})
        node = Node(h, config)
    except (HomeError, ConfigError, GenesisError) as exc:
        fail(str(exc))
    tune_process()
    run_async(run_until_signal, node.run)


@app.command()
def dev(
    devices: Annotated[int, typer.Option(min=1, max=10_000, help="Simulated devices.")] = 8,
    rate: Annotated[float, typer.Option(min=0.1, help="Readings per second in total.")] = 50,
    duration: Annotated[float, typer.Option(
        help="Seconds to run (default: until Ctrl-C).")] = float("inf"),
    api: Annotated[str, typer.Option(help="API listen HOST:PORT.")] = "127.0.0.1:0",
) -> None:
    """A throwaway one-authority chain with simulated devices streaming readings.

    Makes a temporary home, runs a node and K devices that sign and submit vitals, and
    shows one live progress line until Ctrl-C.
    """
    from .devmode import run_dev

    trio.run(run_dev, devices, rate, duration, api)


@app.command()
def status(api: ApiOpt = DEFAULT_API, as_json: JsonOpt = False) -> None:
    """Show a node's chain, height, finalized height, authorities, mempool and peers."""

    async def go() -> dict[str, Any]:
        async with open_client(api_url(api)) as client:
            return await client.call("status")

    result = run_async(go)
    text = "\n".join(f"{k:18} {v}" for k, v in result.items())
    emit(result, as_json, text)


@device_app.command("keygen")
def device_keygen(
    out: Annotated[Path, typer.Option(help="Where to write the private key (mode 0600).")],
    as_json: JsonOpt = False,
) -> None:
    """Make a device key pair; print the public key (the device id)."""
    key = SigningKey.generate()
    try:
        write_key(out, key)
    except (HomeError, OSError) as exc:
        fail(str(exc))
    emit({"device": key.public.hex(), "key_file": str(out)}, as_json, key.public.hex())


def _authority(home: Path) -> tuple[SigningKey, Genesis]:
    try:
        h = Home(home)
        return h.load_key(), h.load_genesis()
    except (HomeError, GenesisError) as exc:
        fail(str(exc))


def _hex32(name: str, value: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        fail(f"{name} must be hex")
    if len(raw) != 32:
        fail(f"{name} must be 32 bytes (64 hex digits)")
    return raw


@device_app.command("admit")
def device_admit(
    device: Annotated[str, typer.Argument(help="The device's public key (hex).")],
    patient: Annotated[str, typer.Option(help="The patient's public key (hex).")],
    home: Annotated[Path, typer.Option("--home", help="An authority's home (its key signs).")],
    device_class: Annotated[str, typer.Option("--class", help="e.g. wearable, implant.")
                            ] = "wearable",
    manufacturer: Annotated[str, typer.Option()] = "unknown",
    api: ApiOpt = DEFAULT_API,
    as_json: JsonOpt = False,
) -> None:
    """Approve a device's admission, signed with the authority key in --home."""
    from .core.tx import AdmitDevice

    key, genesis = _authority(home)
    try:
        tx = sign_tx(AdmitDevice(key.public, _hex32("device", device), _hex32("patient", patient),
                                 device_class, manufacturer), key, genesis.chain_id)
    except ValueError as exc:
        fail(str(exc))
    result = run_async(_submit, api_url(api), tx.raw.hex())
    emit(result, as_json, f"submitted admission {result['id']}")


@device_app.command("revoke")
def device_revoke(
    device: Annotated[str, typer.Argument(help="The device's public key (hex).")],
    home: Annotated[Path, typer.Option("--home", help="An authority's home (its key signs).")],
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "revoked by operator",
    api: ApiOpt = DEFAULT_API,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a device for good, signed with the authority key in --home."""
    import time

    key, genesis = _authority(home)
    body = RevokeDevice(key.public, _hex32("device", device), reason, time.time_ns())
    tx = sign_tx(body, key, genesis.chain_id)
    result = run_async(_submit, api_url(api), tx.raw.hex())
    emit(result, as_json, f"submitted revocation {result['id']}")


async def _submit(url: str, raw_hex: str) -> dict[str, Any]:
    async with open_client(url) as client:
        return await client.call("submit_tx", tx=raw_hex)


@app.command()
def simulate(
    home: Annotated[Path, typer.Option(
        "--home", help="An authority's home: its key admits the simulated devices.")],
    api: ApiOpt = DEFAULT_API,
    devices: Annotated[int, typer.Option(min=1, max=10_000)] = 10,
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
    from .sim.load import run_load

    key, genesis = _authority(home)
    stats = run_async(lambda: run_load(api_url(api), key, genesis.chain_id, devices=devices,
                                       rate=rate, duration_s=duration, seed=seed,
                                       presign=presign, record=record))
    result = stats.summary()
    lat = result["latency_ms"]
    emit(result, as_json,
         f"submitted {result['submitted']}  accepted {result['accepted']}  "
         f"rejected {result['rejected']}  committed {result['committed']}  "
         f"dropped {result['dropped']}  pending {result['pending']}  "
         f"unknown {result['unknown']}  unchecked {result['unchecked']}\n"
         f"latency ms  p50 {lat['p50']}  p99 {lat['p99']}  max {lat['max']}")


@app.command()
def block(
    height: Annotated[int | None, typer.Argument(help="Height (default: the head).")] = None,
    api: ApiOpt = DEFAULT_API,
) -> None:
    """Print a block (header, transactions, commit certificate) as JSON."""

    async def go() -> dict[str, Any]:
        async with open_client(api_url(api)) as client:
            h = height if height is not None else (await client.call("status"))["height"]
            return await client.call("get_block", height=h)

    typer.echo(json.dumps(run_async(go), indent=2, sort_keys=True))


@app.command()
def receipt(
    reading_id: Annotated[str, typer.Argument(help="The reading's (or any tx's) id, hex.")],
    api: ApiOpt = DEFAULT_API,
) -> None:
    """Print a committed reading's receipt as JSON (save it; check it with `verify`)."""

    async def go() -> dict[str, Any]:
        async with open_client(api_url(api)) as client:
            return await client.call("get_receipt", id=reading_id)

    typer.echo(json.dumps(run_async(go), indent=2, sort_keys=True))


@app.command()
def verify(
    receipt_file: Annotated[Path, typer.Argument(help="A receipt saved from `receipt`.")],
    genesis: Annotated[Path, typer.Option(help="The network's genesis.json.")],
    as_json: JsonOpt = False,
) -> None:
    """Check a receipt offline. Exit 0 if valid, 1 if invalid (with the reason), 2 on misuse."""
    try:
        g = Genesis.load(genesis)
        doc = json.loads(receipt_file.read_text())
    except GenesisError as exc:
        fail(str(exc))
    except (OSError, ValueError) as exc:
        fail(f"cannot read receipt {receipt_file}: {exc}")
    try:
        tx, header = verify_receipt(doc, g)
    except ReceiptError as exc:
        emit({"valid": False, "reason": str(exc)}, as_json, f"INVALID: {exc}")
        raise typer.Exit(1) from None
    result = {"valid": True, "tx_id": tx.id.hex(), "type": tx.kind_name,
              "height": header.height, "block_hash": blake2b256(header.encode()).hex(),
              "authority_handoffs": len(doc.get("handoffs", []))}
    emit(result, as_json, f"VALID: {tx.kind_name} {tx.id.hex()} in block {header.height}")


@app.command(help=(
    "Benchmark a localnet of real nodes against this machine's ed25519 ceiling.\n\n"
    "Measures the verify ceiling; submit-to-final latency, wire bytes and CPU at a fixed "
    "offered rate; latency at a few more rates; throughput at saturation (the slowest node's "
    "steady commit rate); then a fresh node's bootstrap. The default run takes one to two "
    "minutes on 2 cores.\n\n"
    "Progress goes to stderr; a table (with --json, one JSON object) to stdout. Every figure "
    "and JSON key is described in docs/performance.md."))
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

    from .bench.plan import Plan, parse_rates
    from .bench.progress import rich_reporter
    from .bench.report import result_table
    from .bench.run import run_bench

    if rate is not None and saturate:
        fail("--rate R runs only the fixed-rate phase and --saturate only the saturation "
             "phase; give one of them, or neither for both")
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
                saturation_rate=saturation_rate)
    with rich_reporter() as reporter:
        result = run_async(lambda: run_bench(plan, out_dir=out, reporter=reporter))
    if out is not None:
        (out / "bench.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if as_json:
        emit(result, True)
    else:
        Console().print(result_table(result))


from .authority_cli import authority_app  # noqa: E402 - it uses the helpers above

app.add_typer(authority_app, name="authority")


def main() -> None:
    app(prog_name="iomtnode")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
