"""`iomtnode simulate --record FILE`: every reading the node accepted, one id a line."""

from __future__ import annotations

import math

import trio

from iomtnode.client import open_client
from iomtnode.sim.load import run_load


async def test_record_lists_exactly_the_accepted_readings_and_appends(running_node, tmp_path):
    record = tmp_path / "accepted.hex"
    with trio.fail_after(60):
        first = await run_load(running_node.url, running_node.authority, running_node.chain_id,
                               devices=3, rate=60, duration_s=1.0, seed=5, record=record)
        lines = record.read_text().splitlines()
        assert first.accepted > 0 and len(lines) == first.accepted == len(set(lines))
        async with open_client(running_node.url) as client:
            for tx_id in lines[:: max(1, math.ceil(len(lines) / 10))]:  # each is on the chain
                assert (await client.call("get_receipt", id=tx_id))["tx_id"] == tx_id
        again = await run_load(running_node.url, running_node.authority, running_node.chain_id,
                               devices=3, rate=60, duration_s=0.5, seed=6, record=record)
    assert len(record.read_text().splitlines()) == first.accepted + again.accepted


async def test_no_record_without_the_option(running_node, tmp_path):
    with trio.fail_after(60):
        await run_load(running_node.url, running_node.authority, running_node.chain_id,
                       devices=1, rate=20, duration_s=0.3, seed=1)
    assert list(tmp_path.iterdir()) == [tmp_path / "node"]
