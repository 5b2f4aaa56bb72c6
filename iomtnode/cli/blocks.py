"""``iomtnode blocks follow``: print committed blocks as they come, resuming across
disconnections (:class:`~iomtnode.client.BlockFollower`)."""

from __future__ import annotations

import json
from typing import Annotated

import trio
import typer

from ..client import BlockFollower, open_client
from .common import DEFAULT_API, ApiOpt, CaOpt, api_url, run_async

blocks_app = typer.Typer(help="Follow a node's committed blocks.", no_args_is_help=True)


@blocks_app.command()
def follow(
    since: Annotated[int | None, typer.Option(
        "--since", help="The first height to print (default: the next block); the node "
                        "replays the stored ones first.")] = None,
    count: Annotated[int | None, typer.Option(
        help="Stop after this many blocks (default: never).")] = None,
    api: ApiOpt = DEFAULT_API,
    api_ca: CaOpt = None,
) -> None:
    """Print each committed block (header fields and tx ids) as one JSON line, every block
    once and in order: when the connection breaks or the node ends the subscription, it
    connects again and resumes from the block after the last one printed."""
    url = api_url(api)

    async def go() -> None:
        first = since
        if first is None:
            async with open_client(url, ca=api_ca) as client:
                first = (await client.call("status"))["height"] + 1
        follower = BlockFollower(url, first, ca=api_ca)
        printed = 0
        async with trio.open_nursery() as nursery:
            await nursery.start(follower.run)
            async for block in follower.blocks:
                typer.echo(json.dumps(block, sort_keys=True))
                printed += 1
                if count is not None and printed >= count:
                    break
            nursery.cancel_scope.cancel()

    run_async(go)
