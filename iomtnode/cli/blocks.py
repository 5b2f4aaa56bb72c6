"""``iomtnode blocks follow``: print committed blocks as they come, resuming across
disconnections (:class:`~iomtnode.client.BlockFollower`)."""

from __future__ import annotations

import json
import os
import sys
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
                try:
                    typer.echo(json.dumps(block, sort_keys=True))
                except BrokenPipeError:  # the reader is gone (`| head`): done, quietly
                    _drop_stdout()
                    break
                printed += 1
                if count is not None and printed >= count:
                    break
            nursery.cancel_scope.cancel()

    run_async(go)


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
