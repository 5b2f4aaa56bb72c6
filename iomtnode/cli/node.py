"""``iomtnode version | init | run | dev``: make a node's home and run the node."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import structlog
import typer

from .. import __version__
from ..config import ConfigError, unknown_variables
from ..core.crypto import SigningKey
from ..core.genesis import Genesis, GenesisError
from ..home import Home, HomeError, init_home, key_from_file
from ..log import configure as configure_logging
from .common import HomeOpt, JsonOpt, emit, fail, global_option, run_async

log = structlog.get_logger(__name__)


def version(as_json: JsonOpt = False) -> None:
    """Print the version (with --json: {"version": ...})."""
    emit({"version": __version__}, as_json, __version__)


def init(
    home: HomeOpt,
    chain_id: Annotated[str, typer.Option(help="Name of a new chain.")] = "iomt-local",
    genesis: Annotated[Path | None, typer.Option(
        help="Join an existing network with its genesis.json instead of making a new chain.")
    ] = None,
    no_genesis: Annotated[bool, typer.Option(
        "--no-genesis", help="Write no genesis.json: a future authority of a network whose "
        "genesis the ceremony makes (iomtnode genesis card, then genesis verify --install).")
    ] = False,
    key_file: Annotated[Path | None, typer.Option(
        help="Use the key in this file (its hex ed25519 seed, as node_key holds it, e.g. a "
             "Kubernetes Secret) instead of a new one. Such a key may have signed before: "
             "the node observes before it signs (docs/consensus.md).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a node home: node key, config.toml, admin token and genesis.

    Without --genesis this makes a new one-authority chain whose authority is this node;
    with --no-genesis, a home waiting for the genesis of a network (docs/network.md).
    """
    if no_genesis and genesis is not None:
        fail("--no-genesis and --genesis exclude each other")
    try:
        doc = Genesis.load(genesis) if genesis else None
        key = import_key(key_file) if key_file is not None else None
        # an imported key may have signed on this network before (a pod whose volume was
        # lost): no signing state, so the node defers; a one-authority chain made here now
        # is new to every key, and its lone authority could never sign again otherwise
        signed_before = key is not None and (doc is not None or no_genesis)
        h = init_home(home, chain_id=chain_id, genesis=doc, key=key, no_genesis=no_genesis,
                      signed_before=signed_before)
        node_id = h.load_key().public.hex()
        g = None if no_genesis else h.load_genesis()
    except (HomeError, GenesisError, OSError) as exc:
        fail(str(exc))
    result = {"home": str(home), "node_id": node_id,
              "chain_id": g.chain_id if g else None,
              "genesis_hash": g.hash.hex() if g else None,
              "signing_state": not signed_before}  # False: the node defers signing at start
    chain = (f"{g.chain_id} ({g.hash.hex()[:16]}...)" if g else
             "none yet: make a card with iomtnode genesis card, then install the network's "
             "genesis with iomtnode genesis verify --install")
    emit(result, as_json, f"initialized {home}\nnode id   {node_id}\nchain     {chain}")


def import_key(path: Path) -> SigningKey:
    """The key in ``path``, as a home's ``node_key`` holds it. A file every user can read is
    imported with a warning, not refused: a mounted Secret is often 0644."""
    try:
        key = key_from_file(path)
        mode = path.stat().st_mode & 0o777
    except HomeError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")
    if mode & 0o007:  # group access may be deliberate (a Secret read through fsGroup)
        typer.echo(f"warning: {path} is open to every user (mode {mode:04o}); the key "
                   "is copied into the home's node_key with mode 0600: remove the original "
                   "or restrict it (chmod 600; a Kubernetes Secret's defaultMode: 0400)",
                   err=True)
    return key


def run(
    ctx: typer.Context,
    home: HomeOpt,
    api: Annotated[str | None, typer.Option(help="API listen HOST:PORT (overrides config).")
                   ] = None,
    p2p: Annotated[str | None, typer.Option(help="P2P listen HOST:PORT (overrides config).")
                   ] = None,
) -> None:
    """Run a node until SIGINT or SIGTERM, then shut down cleanly.

    An IOMTNODE_* environment variable that sets nothing (a misspelt setting's) is logged as
    a warning, config_env_unknown, and the node starts anyway. The node logs at its
    log_level setting (the global --log-level, given, wins over it).
    """
    from ..node import Node
    from ..service import run_until_signal
    from ..tuning import tune_process

    for variable in unknown_variables(os.environ):
        log.warning("config_env_unknown", name=variable.name,
                    did_you_mean=variable.did_you_mean)
    try:
        h = Home(home)
        config = h.load_config({"api_listen": api, "p2p_listen": p2p,
                                "log_level": global_option(ctx, "log_level")})
        configure_logging(config.log_level, json=global_option(ctx, "log_json"))
        node = Node(h, config)
    except (HomeError, ConfigError, GenesisError) as exc:
        fail(str(exc))
    tune_process()
    run_async(run_until_signal, node.run)


DEV_LOG_LEVEL = "warning"  # dev's default: the progress line, not a log line per block


def dev(
    ctx: typer.Context,
    devices: Annotated[int, typer.Option(min=1, max=10_000, help="Simulated devices.")] = 8,
    rate: Annotated[float, typer.Option(min=0.1, help="Readings per second in total.")] = 50,
    duration: Annotated[float, typer.Option(
        help="Seconds to run (default: until Ctrl-C).")] = float("inf"),
    api: Annotated[str, typer.Option(help="API listen HOST:PORT.")] = "127.0.0.1:0",
) -> None:
    """A throwaway one-authority chain with simulated devices streaming readings.

    Makes a temporary home, runs a node and K devices that sign and submit vitals, and
    shows one live progress line until Ctrl-C (or --duration). Then the devices stop, the
    readings they sent are followed until committed, and it prints what ran: the height
    reached, the readings committed and their latency, and the home, which is removed; exit
    0. A second Ctrl-C stops at once. It logs warnings and errors only, unless --log-level
    (given before dev) says otherwise.
    """
    from ..devmode import run_dev

    configure_logging(global_option(ctx, "log_level") or DEV_LOG_LEVEL,
                      json=global_option(ctx, "log_json"))
    run_async(run_dev, devices, rate, duration, api)  # a port in use: one line, exit 1
