"""``iomtnode status | block | receipt | verify``: read a node, and check a receipt offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..client import open_client
from ..core.crypto import blake2b256
from ..core.genesis import Genesis, GenesisError
from ..core.receipt import ReceiptError, verify_receipt
from .common import DEFAULT_API, ApiOpt, CaOpt, JsonOpt, api_url, call, emit, fail, run_async

ReadyOpt = Annotated[bool, typer.Option(
    "--ready", help="Only say whether the node is ready to serve: exit 0 when it answers and is "
                    "caught up (and, unless it is its chain's only authority, has a peer); exit 1 "
                    "with the reason on stderr otherwise. For readiness probes and healthchecks.")]


def readiness(status: dict[str, Any]) -> str | None:
    """Why a node whose ``status`` this is should not be sent work yet, or None when it is
    ready: caught up (its height at or above its sync target) and, unless it is the only
    authority of its chain, connected to at least one peer (alone it can neither finalize
    nor sync)."""
    height, target = status["height"], status["sync_target"]
    if height < target:
        return f"catching up: height {height} of {target}"
    if status["peers"]:
        return None
    authorities = status["authorities"]
    if len(authorities) > 1:
        return f"no peer connected (the network has {len(authorities)} authorities)"
    if status["node_id"] not in authorities:
        return "no peer connected (this node is not an authority: it gets its blocks from peers)"
    return None


def status(
    api: ApiOpt = DEFAULT_API, api_ca: CaOpt = None, as_json: JsonOpt = False,
    ready: ReadyOpt = False,
) -> None:
    """Show a node's chain, height, finalized height, authorities, mempool and peers."""
    result = run_async(lambda: call(api_url(api), "status", ca=api_ca))
    if ready:
        reason = readiness(result)
        if as_json:
            emit({"ready": reason is None, "reason": reason, "height": result["height"]}, True)
        if reason is not None:
            fail(f"not ready: {reason}", 1)
        if not as_json:
            typer.echo(f"ready at height {result['height']}")
        return
    emit(result, as_json, status_text(result))


def status_text(result: dict[str, Any]) -> str:
    """``status`` as aligned lines, a value that is not a string as JSON (a Python repr,
    ``['ab..']`` or ``None``, is no format a reader or a script expects)."""
    width = max(map(len, result), default=0)
    return "\n".join(f"{k:{width}}  {v if isinstance(v, str) else json.dumps(v)}"
                     for k, v in result.items())


def block(
    height: Annotated[int | None, typer.Argument(help="Height (default: the head).")] = None,
    api: ApiOpt = DEFAULT_API,
    api_ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a block (header, transactions, commit certificate) as JSON (indented; one
    line with --json)."""
    async def go() -> dict[str, Any]:
        async with open_client(api_url(api), ca=api_ca) as client:
            h = height if height is not None else (await client.call("status"))["height"]
            return await client.call("get_block", height=h)

    emit(run_async(go), as_json)


def receipt(
    reading_id: Annotated[str, typer.Argument(help="The reading's (or any tx's) id, hex.")],
    api: ApiOpt = DEFAULT_API,
    api_ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a committed reading's receipt as JSON (indented; one line with --json): save
    it, and check it with `verify`."""
    result = run_async(lambda: call(api_url(api), "get_receipt", ca=api_ca, id=reading_id))
    emit(result, as_json)


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
