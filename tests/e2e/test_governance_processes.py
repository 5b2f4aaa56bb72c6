"""Governance on real processes while readings flow: an authority added and one removed
by vote through the CLI, a change that would break quorum refused, and a receipt across
both changes verified offline against the genesis."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from iomtnode.core.block import decode_commit
from iomtnode.localnet import Localnet

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

# a silent proposer costs its round's propose timeout: node4, paused, must miss 32 blocks
# (8 of its own turns) to count offline
FAST = {"IOMTNODE_EMPTY_BLOCK_INTERVAL_S": "0.3", "IOMTNODE_BLOCK_INTERVAL_S": "0.05",
        "IOMTNODE_TIMEOUT_PROPOSE_S": "0.3"}


async def cli(*args: str) -> tuple[int, str, str]:
    result = await trio.run_process([sys.executable, "-m", "iomtnode", "--log-level", "warning",
                                     *args], capture_stdout=True, capture_stderr=True,
                                    check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def vote(net: Localnet, voter: str, subject: str, add: bool) -> tuple[int, str, str]:
    entry = net.node(voter)
    return await cli("authority", "vote", net.node(subject).node_id, "--home", str(entry.home),
                     "--add" if add else "--remove", "--api", entry.api, "--json")


async def votes(net: Localnet, voters: tuple[str, ...], subject: str, add: bool
                ) -> list[tuple[int, str, str]]:
    """The votes of ``voters`` at once (each its own process; their order does not matter)."""
    results: list[tuple[int, str, str]] = [(-1, "", "")] * len(voters)

    async def one(i: int, voter: str) -> None:
        results[i] = await vote(net, voter, subject, add)

    async with trio.open_nursery() as nursery:
        for i, voter in enumerate(voters):
            nursery.start_soon(one, i, voter)
    return results


async def until(what: str, check: Callable[[], Any], timeout_s: float = 60) -> Any:
    """Poll the async ``check`` until it returns something truthy."""
    with trio.move_on_after(timeout_s):
        while True:
            found = await check()
            if found:
                return found
            await trio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_authorities_added_and_removed_by_vote_while_readings_flow(tmp_path: Path):
    async with Localnet.start(nodes=5, authorities=4, path=tmp_path / "net", env=FAST,
                              devices=2, rate=50) as net:
        await net.wait_for_height(3, timeout_s=60)
        ids = {n: net.node(n).node_id for n in net.names}

        async def report(name: str = "node2") -> dict[str, Any]:
            return {a["key"]: a for a in (await net.call(name, "get_authorities"))["authorities"]}

        async def authorities_everywhere(expected: set[str]) -> bool:
            for name in net.names:
                if set((await net.status(name))["authorities"]) != expected:
                    return False
            return True

        # with node4 silent, removing an online authority would leave 2 of 3: refused
        await net.pause("node4")
        await until("node4 counted offline",
                    lambda: _offline(report, ids["node4"]), timeout_s=90)
        pending = await votes(net, ("node1", "node3"), "node2", add=False)
        assert [code for code, _, _ in pending] == [0, 0]  # 1 and 2 of 4: pending
        code, _, err = await vote(net, "node2", "node2", add=False)  # 3 of 4 would pass
        assert code == 1, err
        assert "would need 3 precommits per block, but only 2" in err
        await net.resume("node4")
        await until("node4 online again", lambda: _online(report, ids["node4"]))

        # node5 is voted in by three of four; it must then sign certificates
        for code, out, err in await votes(net, ("node1", "node2", "node3"), "node5", add=True):
            assert code == 0, err
            assert len(json.loads(out)["id"]) == 64
        five = {ids[n] for n in ("node1", "node2", "node3", "node4", "node5")}
        await until("node5 an authority everywhere", lambda: authorities_everywhere(five))
        joined = (await net.status("node2"))["height"]
        await until("node5's precommit in a certificate",
                    lambda: _certified_by(net, ids["node5"], after=joined))

        # node1 is voted out by three of five; the other four keep finalizing without it
        for code, _, err in await votes(net, ("node2", "node3", "node5"), "node1", add=False):
            assert code == 0, err
        four = five - {ids["node1"]}
        await until("node1 removed everywhere", lambda: authorities_everywhere(four))
        removed_at = (await net.status("node2"))["height"]
        top = (await net.status("node2"))["finalized_height"]
        before = (await net.status("node2"))["committed_txs"]
        await net.wait_for_height(top + 10, timeout_s=60)
        # readings still flow (node1, no longer an authority, takes the simulator's load)
        assert (await net.status("node2"))["committed_txs"] > before
        assert not await _certified_by(net, ids["node1"], after=removed_at + 1)

        # a reading committed after both changes is proven offline from the genesis alone
        # (while the nodes are checked to agree)
        head = await net.call("node2", "get_block", height=(await net.status("node2"))["height"])
        height = head["height"]
        while not head["txs"]:
            height -= 1
            head = await net.call("node2", "get_block", height=height)
        receipt = await net.call("node2", "get_receipt", id=head["txs"][0]["id"])
        assert len(receipt["handoffs"]) == 2
        path = tmp_path / "receipt.json"
        path.write_text(json.dumps(receipt))
        genesis = Path(net.node("node2").home) / "genesis.json"
        verified: list[tuple[int, str, str]] = []

        async def verify() -> None:
            verified.append(await cli("verify", str(path), "--genesis", str(genesis), "--json"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(verify)
            await net.check_invariants(k=3, within_s=10)
        code, out, err = verified[0]
        assert code == 0, err
        assert json.loads(out)["height"] == height


async def _offline(report: Callable[[], Any], key: str) -> bool:
    return not (await report())[key]["online"]


async def _online(report: Callable[[], Any], key: str) -> bool:
    return bool((await report())[key]["online"])


async def _certified_by(net: Localnet, key: str, after: int) -> bool:
    status = await net.status("node2")
    for height in range(after, status["height"] + 1):
        commit = (await net.call("node2", "get_block", height=height))["commit"]
        if commit and key in {a.hex() for a, _ in decode_commit(bytes.fromhex(commit)).signatures}:
            return True
    return False
