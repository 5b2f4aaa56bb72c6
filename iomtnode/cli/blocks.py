"""``iomtnode blocks follow``: print committed blocks as they come, resuming across
disconnections (:class:`~iomtnode.client.BlockFollower`)."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Annotated

import trio
import typer

from ..client import BlockFollower, FollowGaveUp
from .common import DEFAULT_API, ApiOpt, CaOpt, api_url, fail, run_async

blocks_app = typer.Typer(help="Follow a node's committed blocks.", no_args_is_help=True)

GAVE_UP_EXIT = 3  # no subscription for --retry-for seconds


@blocks_app.command()
def follow(
    since: Annotated[int | None, typer.Option(
        "--since", help="The first height to print (default: the block after the node's "
                        "head when it first answers); the node replays the stored ones "
                        "first.")] = None,
    count: Annotated[int | None, typer.Option(
        help="Stop after this many blocks (default: never).")] = None,
    retry_for: Annotated[float | None, typer.Option(
        "--retry-for", min=0.0, metavar="SECONDS",
        help="Give up after this many seconds without a subscription, at the start or "
             "later (exit 3); 0: give up at the first failed attempt. Default: retry "
             "forever.")] = None,
    api: ApiOpt = DEFAULT_API,
    api_ca: CaOpt = None,
) -> None:
    """Print each committed block (header fields and tx ids) as one JSON line, every block
    once and in order.

    The node may be down when it starts, or go away later: either way it connects again
    (after 1 s, doubling up to 30 s), writing one warning line per failed attempt to stderr
    (block_subscription_failed, with the reason and the wait), and resumes from the block
    after the last one printed. With --retry-for it gives up after that long without a
    subscription: exit 3, after an error line naming the --since to resume with. A URL or
    CA file it cannot use, a certificate that does not verify, or a --since the node does
    not hold at the start: exit 1 or 2 at once."""
    url = api_url(api)
    follower = BlockFollower(url, since, ca=api_ca,
                             retry_for_s=math.inf if retry_for is None else retry_for)
    gave_up: list[FollowGaveUp] = []

    async def keep_following() -> None:
        try:
            await follower.run()
        except FollowGaveUp as exc:
            gave_up.append(exc)  # the blocks it passed on are printed first

    async def go() -> None:
        printed = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_following)
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
    if gave_up:
        resume = (f"; resume with --since {follower.next_height}"
                  if follower.next_height is not None else "")
        fail(f"{gave_up[0]}{resume}", GAVE_UP_EXIT)


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
