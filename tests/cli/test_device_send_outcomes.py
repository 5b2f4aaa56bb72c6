"""``iomtnode device send`` tells each outcome of docs/readings.md apart, in text, in --json
and by its exit code: committed (0), refused at admission (3), accepted then dropped by the
node (4), accepted then lost or still pending when it stops waiting (5). Against a scripted
node (the device library's, behind a websocket) whose answers make each outcome."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from iomtnode.cli import devicesend
from iomtnode.core import codec
from iomtnode.core.crypto import SigningKey
from iomtnode.home import write_key

from ..patient.test_device import CHAIN, STREAM, FakeNode
from .clikit import cli

WAIT_S = 20.0


class ScriptedNode(FakeNode):
    """``tx_state``: what get_tx_status says of every accepted reading (None: as FakeNode)."""

    def __init__(self, device: SigningKey, tx_state: str | None = None) -> None:
        super().__init__(device)
        self.tx_state = tx_state

    async def call(self, method: str, **params: Any) -> Any:
        if method == "status":
            return {"chain_id": CHAIN, "node_id": "ab" * 32, "height": 7}
        if method == "auth_challenge":
            return {"nonce": "00" * 32, "chain_id": CHAIN}
        if method == "authenticate":
            return {"keys": [params["public_key"]]}
        if method == "get_tx_status" and self.tx_state is not None:
            return [{"id": i, "state": self.tx_state} for i in params["ids"]]
        return await super().call(method, **params)


async def serve(node: ScriptedNode, request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            message = await ws.get_message()
            if isinstance(message, bytes):  # a binary frame of readings
                request_id, txs = codec.decode(message)
                await ws.send_message(codec.encode([request_id,
                                                    await node.submit_binary(txs)]))
                continue
            rpc = json.loads(message)
            result = await node.call(rpc["method"], **rpc["params"])
            await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": rpc["id"],
                                              "result": result}))
    except ConnectionClosed:
        pass


async def send(node: ScriptedNode, tmp_path: Path, *extra: str) -> Any:
    key = tmp_path / f"device-{node.device.public.hex()[:16]}.key"
    write_key(key, node.device)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, partial(serve, node),
                                             "127.0.0.1", 0, ssl_context=None))
        with trio.fail_after(WAIT_S):
            result = await cli("device", "send", "--key", key, "--stream",
                               STREAM.public.hex(), "--kind", "heart_rate", "--value", "72",
                               "--api", f"127.0.0.1:{server.port}", *extra)
        nursery.cancel_scope.cancel()
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"a traceback: {result.exception!r}\n{result.stderr}")
    return result


async def outcome(script: dict[str, Any], tmp_path: Path) -> tuple[int, dict[str, Any], str]:
    """The exit code, the --json answer and the text line of `device send` to a node
    following ``script`` (each to a node of its own)."""
    as_json = await send(node(**script), tmp_path, "--json")
    text = await send(node(**script), tmp_path)
    assert as_json.exit_code == text.exit_code, text.stderr
    return as_json.exit_code, json.loads(as_json.stdout), text.stdout.strip()


def node(tx_state: str | None = None, **script: Any) -> ScriptedNode:
    scripted = ScriptedNode(SigningKey.generate(), tx_state)
    for name, value in script.items():
        setattr(scripted, name, value)
    return scripted


async def test_committed_says_the_block(tmp_path):
    code, answer, text = await outcome({}, tmp_path)
    assert code == 0
    assert answer["state"] == "committed" and answer["height"] == 7 and answer["seq"] == 1
    assert text.startswith("committed: reading 1 in block 7")


async def test_refused_at_admission_says_the_code_and_reason(tmp_path):
    code, answer, text = await outcome({"refuse_code": 1003}, tmp_path)
    assert code == devicesend.EXIT_REFUSED == 3
    assert (answer["state"], answer["code"], answer["reason"]) == ("refused", 1003, "refused")
    assert text.startswith("refused at admission: refused (code 1003)")


async def test_accepted_then_dropped_is_not_called_refused(tmp_path):
    code, answer, text = await outcome({"drop_next_with": 1022}, tmp_path)
    assert code == devicesend.EXIT_DROPPED == 4
    assert (answer["state"], answer["code"], answer["reason"]) == ("dropped", 1022, "dropped")
    assert text.startswith("accepted, then dropped by the node: dropped (code 1022)")
    assert "is not on the ledger" in text and "refused" not in text


async def test_accepted_then_lost_every_time_says_unknown(tmp_path):
    code, answer, text = await outcome({"tx_state": "unknown"}, tmp_path)
    assert code == devicesend.EXIT_UNKNOWN == 5
    assert answer["state"] == "lost" and answer["code"] == 0
    assert text.startswith("accepted, then lost:") and "unknown" in text


async def test_still_pending_when_it_stops_waiting(tmp_path, monkeypatch):
    monkeypatch.setattr(devicesend, "COMMIT_WAIT_S", 0.3)
    code, answer, text = await outcome({"tx_state": "pending"}, tmp_path)
    assert code == devicesend.EXIT_UNKNOWN
    assert answer["state"] == "pending" and answer["waited_s"] == 0.3
    assert text.startswith("accepted, not committed within 0 s: reading 1 is pending")
    assert "ask later: iomtnode receipt " in text and len(answer["id"]) == 64


@pytest.mark.parametrize(("state", "code"), [("committed", 0), ("refused", 3),
                                             ("dropped", 4), ("lost", 5), ("pending", 5)])
def test_every_outcome_has_its_exit_code_in_the_help(state, code):
    assert devicesend.EXITS[state] == code
    help_text = " ".join((devicesend.device_send.__doc__ or "").split())
    assert f"{state} " in help_text and f"exit {code}" in help_text
