"""``iomtnode audit --patient P --verify`` against a real node: every read of the patient's
records (served or refused) is in the node's log once anchored, the check passes against the
genesis, and it fails, naming the range, when the node's answer lacks a record; an anchor is
believed only when its receipt proves that very anchor of that node."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from iomtnode.audit.record import decode_record
from iomtnode.cli.audit import anchors_of, checked_anchors
from iomtnode.client import ApiError, open_client
from iomtnode.core.genesis import Genesis
from iomtnode.home import init_home
from iomtnode.node import Node

from ..conftest import FAST, RunningNode
from .clikit import cli, logs_beside_the_commands, ok
from .test_patient_cli import patient, patient_with_device, send

pytestmark = pytest.mark.timeout(180)
__all__ = ["logs_beside_the_commands"]  # an autouse fixture, imported to be used here

ANCHOR_S = 0.5  # the node anchors its log this soon after a record (a minute in production)


@pytest.fixture
async def anchoring_node(tmp_path, nursery) -> RunningNode:
    """A running node that anchors its audit log every :data:`ANCHOR_S`."""
    home = init_home(tmp_path / "node", chain_id="iomt-test",
                     config=replace(FAST, audit_anchor_s=ANCHOR_S))
    node = Node(home, home.load_config())
    info = await nursery.start(node.run)
    return RunningNode(node, home, f"ws://127.0.0.1:{info.api_port}/api/v1", info.services)


async def anchored(node) -> int:
    """Wait until the node's anchors on the ledger cover its whole audit log; its size."""
    audit, chain = node.services.audit, node.services.chain
    with trio.fail_after(30):
        while True:
            if chain.audit_anchor_next(node.node.key.public) == audit.next_index:
                return audit.next_index
            await trio.sleep(0.05)


async def test_audit_verify_passes_then_fails_when_a_record_is_withheld(
        anchoring_node, tmp_path, monkeypatch):
    node = anchoring_node
    stream, device = await patient_with_device(node, tmp_path)
    await send(node, stream, device, "heart_rate", 70)
    card = await ok("patient", "keygen", "--grantee", "--out", tmp_path / "clinician.key")
    await ok("patient", "keygen", "--grantee", "--out", tmp_path / "stranger.key")
    await ok("patient", "grant", *patient(tmp_path, node), "--card", card.strip(), "--expires",
             "1d")
    await ok("records", "fetch", "--as", tmp_path / "clinician.key", "--stream", stream,
             "--api", node.url)
    refused = await cli("records", "fetch", "--as", tmp_path / "stranger.key", "--stream",
                        stream, "--api", node.url)
    assert refused.exit_code == 1
    size = await anchored(node)
    assert size == 2  # one served read, one refused: both recorded

    check = ["audit", "--patient", tmp_path / "patient.key", "--scope", "vitals", "--verify",
             "--genesis", node.home.path / "genesis.json", "--api", node.url]
    report = json.loads(await ok(*check, "--json"))
    [mine] = report["nodes"]
    assert report["ok"] and mine["anchored"] == 2 and mine["yours"] == [0, 1]
    assert report["unchecked"] == []  # the only node with anchors is the one checked
    text = await ok(*check)
    assert "complete and unchanged" in text

    honest = node.services.audit.log_range

    async def withholding(first, count, streams):  # a node that hides the refused read
        leaves, records = await honest(first, count, streams)
        hidden = {i: r for i, r in records.items() if decode_record(r).code == 0}
        return leaves, hidden

    monkeypatch.setattr(node.services.audit, "log_range", withholding)
    failed = await cli(*check)
    assert failed.exit_code == 1
    assert "record 1: this record is about your data, but the node did not give it" in (
        failed.stdout)

    async def removing(first, count, streams):  # a node that removed the first record
        leaves, records = await honest(first, count, streams)
        return leaves[1:], {i - 1: r for i, r in records.items() if i}

    monkeypatch.setattr(node.services.audit, "log_range", removing)
    failed = await cli(*check)
    assert failed.exit_code == 1 and "records 0 to 1" in failed.stdout

    async def truncated(first, count, streams):  # a node whose log lost its tail
        raise ValueError(f"records {first}..{first + count - 1} asked, the log holds 0..0")

    monkeypatch.setattr(node.services.audit, "log_range", truncated)
    failed = await cli(*check)
    assert failed.exit_code == 1
    assert "records 0 to 1: the node refused to give them" in failed.stdout
    assert "the node did not give 2 of the 2 entries" in failed.stdout

    genesis = Genesis.load(node.home.path / "genesis.json")
    me = node.node.key.public
    async with open_client(node.url) as client:
        anchors = await anchors_of(client, me)
    [honest] = anchors
    assert checked_anchors(anchors, me, genesis) == ([(0, 2, bytes.fromhex(honest["root"]))], [])
    lie = honest | {"root": "00" * 32}  # a node claiming another root than the ledger's
    assert checked_anchors([lie], me, genesis)[1] == [
        "anchor of records 0 to 1: its receipt proves another transaction"]
    assert checked_anchors(anchors, bytes(32), genesis)[0] == []  # another node's anchor
    tx = bytearray.fromhex(honest["receipt"]["tx"])
    tx[-1] ^= 1
    forged = honest | {"receipt": honest["receipt"] | {"tx": tx.hex()}}
    [reason] = checked_anchors([forged], me, genesis)[1]
    assert "its receipt does not verify" in reason



async def hiding_proxy(upstream: str, request: WebSocketRequest) -> None:
    """A node (in front of ``upstream``) that lists none of its own anchors and whose log
    lost the refused read of the patient's records: each call goes to ``upstream``."""
    ws = await request.accept()
    async with open_client(upstream) as client:
        try:
            while True:
                message = json.loads(await ws.get_message())
                method, params = message["method"], message["params"]
                try:
                    result = [] if method == "get_audit_anchors" else await client.call(
                        method, **params)
                    if method == "get_audit_log":
                        result["records"] = {i: r for i, r in result["records"].items()
                                             if decode_record(bytes.fromhex(r)).code == 0}
                    answer = {"result": result}
                except ApiError as exc:
                    answer = {"error": {"code": exc.code, "message": exc.message}}
                await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": message["id"]}
                                                 | answer))
        except ConnectionClosed:
            pass


async def test_a_node_cannot_hide_its_anchors_when_another_node_is_asked(
        anchoring_node, tmp_path):
    node = anchoring_node
    stream, _ = await patient_with_device(node, tmp_path)
    await ok("patient", "keygen", "--grantee", "--out", tmp_path / "stranger.key")
    refused = await cli("records", "fetch", "--as", tmp_path / "stranger.key", "--stream",
                        stream, "--api", node.url)
    assert refused.exit_code == 1
    assert await anchored(node) == 1  # the refused read, anchored
    async with trio.open_nursery() as nursery:
        proxy = await nursery.start(partial(serve_websocket, partial(hiding_proxy, node.url),
                                            "127.0.0.1", 0, None))
        check = ["audit", "--patient", tmp_path / "patient.key", "--scope", "vitals",
                 "--verify", "--genesis", node.home.path / "genesis.json", "--json",
                 "--api", f"127.0.0.1:{proxy.port}"]
        failed = await cli(*check, "--api", node.url)
        nursery.cancel_scope.cancel()
    assert failed.exit_code == 1, failed.stdout
    hiding, honest = json.loads(failed.stdout)["nodes"]
    assert not hiding["ok"] and hiding["anchored"] == 1 and honest["ok"]
    assert "did not give it to you (withheld)" in hiding["failures"][0]


async def test_audit_lists_the_callers_reads_not_anchored_yet(tmp_path, nursery):
    """A read the node has not anchored yet is listed as such (not a failure), not left out."""
    home = init_home(tmp_path / "node", chain_id="iomt-test",
                     config=replace(FAST, audit_anchor_s=3600.0))
    node = Node(home, home.load_config())
    info = await nursery.start(node.run)
    node = RunningNode(node, home, f"ws://127.0.0.1:{info.api_port}/api/v1", info.services)
    await patient_with_device(node, tmp_path)
    await ok("records", "fetch", "--as", tmp_path / "patient.key", "--scope", "vitals",
             "--api", node.url)
    assert node.services.audit.next_index == 1
    check = ["audit", "--patient", tmp_path / "patient.key", "--scope", "vitals", "--verify",
             "--genesis", node.home.path / "genesis.json", "--api", node.url]
    [mine] = json.loads(await ok(*check, "--json"))["nodes"]
    assert mine["ok"] and mine["anchored"] == 0 and mine["unanchored"] == [0]
    assert "your record 0 is not anchored on the ledger yet" in await ok(*check)


async def test_a_scope_the_ledger_does_not_know_is_said_not_blamed_on_the_node(
        anchoring_node, tmp_path):
    # a mistyped --scope proves a stream key no device was admitted to: the node then refuses
    # get_audit_log (-32023), which the check reported as 'the audit log FAILED' (exit 1),
    # accusing an honest node; the command says what is wrong instead
    node = anchoring_node
    await patient_with_device(node, tmp_path)
    check = ["audit", "--patient", tmp_path / "patient.key", "--verify",
             "--genesis", node.home.path / "genesis.json", "--api", node.url]
    for scopes in (["--scope", "vitlas"], ["--scope", "vitals", "--scope", "vitlas"]):
        result = await cli(*check, *scopes)
        assert result.exit_code == 2, result.output
        assert "the ledger knows no vitlas stream of this patient key" in result.output
        assert "FAILED" not in result.output
    assert "complete and unchanged" in await ok(*check, "--scope", "vitals")


async def test_the_genesis_of_another_network_of_the_same_name_is_said(anchoring_node, tmp_path):
    # every `iomtnode init` makes a chain "iomt-local": a genesis.json of another such network
    # made the check print "complete and unchanged" and then fail every anchor's receipt
    node = anchoring_node
    await patient_with_device(node, tmp_path)
    other = init_home(tmp_path / "other", chain_id="iomt-test")
    result = await cli("audit", "--patient", tmp_path / "patient.key", "--scope", "vitals",
                       "--verify", "--genesis", other.path / "genesis.json", "--api", node.url)
    assert result.exit_code == 2, result.output
    assert "is a node of another network named 'iomt-test'" in result.output
    assert "complete and unchanged" not in result.output


async def test_a_node_that_is_no_authority_is_said_never_to_anchor(anchoring_node, tmp_path,
                                                                    nursery):
    # a node that only follows keeps its log but cannot anchor it: the check told the patient
    # "not anchored on the ledger yet; check again in a minute", which stays true forever
    node = anchoring_node
    await patient_with_device(node, tmp_path)
    async with open_client(node.url) as client:
        head = await client.call("status")
    follower_home = init_home(tmp_path / "follower", genesis=node.node.genesis,
                              config=replace(FAST, bootnodes=(head["p2p_address"],)))
    follower = Node(follower_home, follower_home.load_config())
    info = await nursery.start(follower.run)
    url = f"ws://127.0.0.1:{info.api_port}/api/v1"
    with trio.fail_after(20):  # the follower has the stream (its device and epoch)
        while True:
            if info.services.chain.height >= head["height"]:
                break
            await trio.sleep(0.05)
    await ok("records", "fetch", "--as", tmp_path / "patient.key", "--scope", "vitals",
             "--api", url)
    check = ["audit", "--patient", tmp_path / "patient.key", "--scope", "vitals", "--verify",
             "--genesis", node.home.path / "genesis.json", "--api", url]
    [mine] = json.loads(await ok(*check, "--json"))["nodes"]
    assert mine["ok"] and not mine["authority"] and mine["unanchored"] == [0]
    text = await ok(*check)
    assert "check again in a minute" not in text
    assert "never will be: this node is not an authority" in text
