"""A client of a real node process that disconnects for 10 s and resubscribes with
``since_height`` receives every block once: from its first to the node's head, in order, each
the block ``get_block`` returns (height and hash)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from iomtnode.client import ApiClient, open_client
from tests.e2e.procs import NodeProcess, iomtnode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
AWAY_S = 10.0  # the client is disconnected this long
WAIT_S = 30.0  # for any block to come


async def blocks_until(client: ApiClient, height: int, got: list[dict[str, Any]]) -> None:
    """Append the client's block notifications to ``got`` until one at ``height``."""
    with trio.fail_after(WAIT_S):
        async for note in client.notifications:
            assert note["method"] == "block", note  # nothing ends the subscription here
            got.append(note["params"])
            if note["params"]["height"] >= height:
                return
    raise AssertionError("the node closed the connection")


async def follow_with_a_gap(api: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []
    async with open_client(api) as client:
        assert await client.call("subscribe_blocks") == "blocks"
        start = (await client.call("status"))["height"]
        await blocks_until(client, start + 3, got)
    # the websocket is closed: blocks commit meanwhile
    await trio.sleep(AWAY_S)
    async with open_client(api) as client:
        missed_from = got[-1]["height"] + 1
        assert await client.call("subscribe_blocks", since_height=missed_from) == "blocks"
        head = (await client.call("status"))["height"]
        assert head >= missed_from + 5  # blocks were committed while it was away
        await blocks_until(client, head + 2, got)  # the replay, the seam, then live blocks
        stored = [await client.call("get_block", height=b["height"]) for b in got]
    return got, stored


async def stored_hashes(api: str, heights: list[int]) -> list[str]:
    async with open_client(api) as client:
        return [(await client.call("get_block", height=h))["hash"] for h in heights]


def test_a_client_away_for_10_s_resumes_with_every_block_once(tmp_path: Path):
    home = tmp_path / "node"
    iomtnode("init", "--home", str(home))
    with NodeProcess.start(home, tmp_path / "node.log") as node:
        load = subprocess.Popen(  # blocks that carry readings, not only empty ones
            [sys.executable, "-m", "iomtnode", "simulate", "--api", node.api, "--home",
             str(home), "--devices", "2", "--rate", "20", "--duration", "40", "--seed", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            got, stored = trio.run(follow_with_a_gap, node.api)
        finally:
            load.kill()
            load.wait()
        followed = iomtnode("blocks", "follow", "--since", "2", "--count", "4", "--api",
                            node.api).stdout.splitlines()  # the command replays, then stops
        assert [json.loads(line)["height"] for line in followed] == [2, 3, 4, 5]
        assert [json.loads(line)["hash"] for line in followed] == trio.run(
            stored_hashes, node.api, [2, 3, 4, 5])
    heights = [b["height"] for b in got]
    assert heights == list(range(heights[0], heights[0] + len(heights)))  # once each, in order
    assert [(b["height"], b["hash"], b["tx_ids"]) for b in got] == [
        (s["height"], s["hash"], [tx["id"] for tx in s["txs"]]) for s in stored]
    assert sum(len(b["tx_ids"]) for b in got) > 0
