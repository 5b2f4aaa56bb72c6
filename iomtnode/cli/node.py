"""``iomtnode version | init | run | dev``: make a node's home and run the node."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import trio
import typer

from .. import __version__
from ..config import ConfigError
from ..core.genesis import Genesis, GenesisError
from ..home import Home, HomeError, init_home
from .common import HomeOpt, JsonOpt, emit, fail, run_async


def version() -> None:
    """Print the version."""
    typer.echo(__version__)


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


def run(
    home: HomeOpt,
    api: Annotated[str | None, typer.Option(help="API listen HOST:PORT (overrides config).")
                   ] = None,
    p2p: Annotated[str | None, typer.Option(help="P2P listen HOST:PORT (overrides config).")
                   ] = None,
) -> None:
    """Run a node until SIGINT or SIGTERM, then shut down cleanly."""
    from ..node import Node
    from ..service import run_until_signal
    from ..tuning import tune_process

    try:
        h = Home(home)
        config = h.load_config({"api_listen": api, "p2p_listen": p2p})
        node = Node(h, config)
    except (HomeError, ConfigError, GenesisError) as exc:
        fail(str(exc))
    tune_process()
    run_async(run_until_signal, node.run)


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
    from ..devmode import run_dev

    trio.run(run_dev, devices, rate, duration, api)
