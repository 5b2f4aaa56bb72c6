"""A node that answers with nonsense: every patient, grantee, device and audit command ends with
one clear error line (exit 1), never a traceback, and does no unbounded work for it; a path
``records fetch`` cannot write is one error line too."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from iomtnode.core.crypto import SigningKey
from iomtnode.core.genesis import Genesis
from iomtnode.home import write_key
from iomtnode.patient.keyfile import write_grantee, write_patient
from iomtnode.patient.keys import GranteeKeys, derive_stream, new_root

from .clikit import cli

CHAIN = "iomt-lying"
ROOT = new_root()
WAIT_S = 20.0

Answers = Callable[[str, dict[str, Any]], Any]


def honest_setup(method: str, params: dict[str, Any]) -> Any:
    """What the lying node answers truthfully enough to get past the connection's set-up."""
    if method == "status":
        return {"chain_id": CHAIN, "node_id": "ab" * 32}
    if method == "auth_challenge":
        return {"nonce": "00" * 32, "chain_id": CHAIN}
    if method == "authenticate":
        return {"keys": [params["public_key"]]}
    return None


async def serve(answers: Answers, request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            message = json.loads(await ws.get_message())
            method, params = message["method"], message["params"]
            result = honest_setup(method, params)
            if result is None:
                result = answers(method, params)
            await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": message["id"],
                                              "result": result}))
    except ConnectionClosed:
        pass


async def run_against(answers: Answers, *args: str | Path) -> Any:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, partial(serve, answers),
                                              "127.0.0.1", 0, ssl_context=None))
        port = server.port
        with trio.fail_after(WAIT_S):
            result = await cli(*args, "--api", f"127.0.0.1:{port}")
        nursery.cancel_scope.cancel()
    return result


def assert_clear_error(result: Any) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"a traceback: {result.exception!r}\n{result.stderr}")
    assert result.exit_code == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the node's answer" in errors[0], result.stderr


@pytest.fixture
def patient_key(tmp_path: Path) -> Path:
    path = tmp_path / "patient.key"
    write_patient(path, ROOT)
    return path


@pytest.mark.parametrize("answer", [
    {},
    {"readings": "none", "wraps": [], "cursor": None},
    {"readings": [], "wraps": 3, "cursor": None},
    [1, 2, 3],
])
async def test_records_fetch_says_the_answer_is_malformed(tmp_path, answer):
    grantee = tmp_path / "grantee.key"
    write_grantee(grantee, GranteeKeys.generate())
    result = await run_against(lambda method, params: answer, "records", "fetch", "--as",
                               grantee, "--stream", "cd" * 32)
    assert_clear_error(result)


@pytest.mark.parametrize("view", [
    {},
    {"epoch": 1, "erased": False, "grants": [{"grantee": "xyz"}]},
    {"epoch": "one", "erased": False, "grants": []},
])
async def test_patient_epoch_says_the_answer_is_malformed(patient_key, view):
    result = await run_against(lambda method, params: view, "patient", "epoch", "--key",
                               patient_key, "--scope", "vitals", "--chain-id", CHAIN)
    assert_clear_error(result)


async def test_patient_revoke_says_the_answer_is_malformed(patient_key):
    result = await run_against(lambda method, params: {"erased": False}, "patient", "revoke",
                               "--key", patient_key, "--scope", "vitals", "--grantee",
                               "ef" * 32, "--chain-id", CHAIN)
    assert_clear_error(result)


async def test_patient_epoch_with_a_grantee_listed_twice(patient_key):
    card = GranteeKeys.generate()
    grant = {"grantee": card.grantee.hex(), "box": card.box_public.hex(), "mode": 0,
             "expires_ms": 2**62}
    view = {"epoch": 1, "erased": False, "grants": [grant, grant]}
    result = await run_against(lambda method, params: view, "patient", "epoch", "--key",
                               patient_key, "--scope", "vitals", "--chain-id", CHAIN)
    assert_clear_error(result)


@pytest.mark.parametrize("answer", [{}, {"stream": 5, "status": "active"}, "nothing"])
async def test_device_send_says_the_answer_is_malformed(tmp_path, answer):
    device = tmp_path / "device.key"
    write_key(device, SigningKey.generate())
    stream = derive_stream(ROOT, CHAIN, "vitals").public.hex()
    result = await run_against(lambda method, params: answer, "device", "send", "--key",
                               device, "--stream", stream, "--kind", "heart_rate", "--value",
                               "72")
    assert_clear_error(result)


@pytest.mark.parametrize("anchors", [[{"first": 0}], [{"receipt": "x"}], "none"])
async def test_audit_says_the_answer_is_malformed(tmp_path, patient_key, anchors):
    genesis = tmp_path / "genesis.json"
    genesis.write_text(Genesis(chain_id=CHAIN, time_ms=1,
                               authorities=(SigningKey.generate().public,),
                               admission_threshold=1).to_text())

    def answers(method: str, params: dict[str, Any]) -> Any:
        return anchors if method == "get_audit_anchors" else {}

    result = await run_against(answers, "audit", "--patient", patient_key, "--scope",
                               "vitals", "--genesis", genesis, "--verify")
    assert_clear_error(result)


async def test_an_anchor_no_ledger_holds_costs_the_fhir_export_no_pages(tmp_path, patient_key):
    """An anchor of more records than one may cover is not the ledger's: the export asks for
    no page of a log it claims (else one answer would cost billions of calls)."""
    asked: list[int] = []

    def answers(method: str, params: dict[str, Any]) -> Any:
        if method == "get_patient_records":
            return {"readings": [], "wraps": [], "cursor": None}
        if method == "get_audit_anchors":
            return [{"first": 0, "count": 2**62, "root": "00" * 32}] if params["first"] == 0 \
                else []
        if method == "get_audit_log":
            asked.append(params["first"])
            return {"leaves": [], "records": {}} if len(asked) < 1_000 else "enough"
        if method == "get_stream":
            return {"epoch": 1, "erased": False, "grants": []}
        raise AssertionError(method)

    result = await run_against(answers, "records", "fetch", "--as", patient_key, "--scope",
                               "vitals", "--chain-id", CHAIN, "--fhir", tmp_path / "b.json")
    assert asked == [] and result.exit_code == 0, result.stderr


@pytest.mark.parametrize("option", ["--out", "--fhir"])
async def test_records_fetch_to_a_path_it_cannot_write_is_one_error_line(tmp_path, patient_key,
                                                                          option):
    def answers(method: str, params: dict[str, Any]) -> Any:
        if method == "get_patient_records":
            return {"readings": [], "wraps": [], "cursor": None}
        if method == "get_audit_anchors":
            return []
        if method == "get_stream":
            return {"epoch": 1, "erased": False, "grants": []}
        raise AssertionError(method)

    target = tmp_path / "no such directory" / "out.json"
    result = await run_against(answers, "records", "fetch", "--as", patient_key, "--scope",
                               "vitals", "--chain-id", CHAIN, option, target)
    assert isinstance(result.exception, SystemExit) and result.exit_code == 2, result.stderr
    assert result.stderr.splitlines() == [f"error: cannot write {target}: No such file or "
                                          "directory"]
