"""What the patient's, the grantee's and the device's commands share: key files, the chain id,
a stream's ledger view, and submitting a transaction until it is committed or dropped."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import trio
import typer

from ..client import ApiClient, ApiError
from ..core.crypto import SigningKey
from ..core.tx import SignedTx
from ..patient.keyfile import KeyFileError, load_grantee, load_patient
from ..patient.keys import GranteeKeys, PatientKeyError, derive_stream
from ..service import single_exception
from .common import fail, run_async

COMMIT_WAIT_S = 30.0  # a submitted transaction is committed or dropped within this, or we say so
STATUS_POLL_S = 0.1  # between two get_tx_status questions
NOT_FOUND = 1030  # the API's code for a stream, block or transaction it does not have
# what reading a field the node's answer lacks, or has of another type or form, raises
MALFORMED_ANSWER = (KeyError, TypeError, ValueError, IndexError, AttributeError)

KeyOpt = Annotated[Path, typer.Option("--key", help="The patient's key file "
                                      "(`iomtnode patient keygen`).")]
ScopeOpt = Annotated[str, typer.Option("--scope", help="The stream's scope, e.g. vitals or "
                                       "ecg (never on the ledger).")]
ChainOpt = Annotated[str | None, typer.Option(
    "--chain-id", help="The network's chain id (default: ask the node at --api).")]
WaitOpt = Annotated[bool, typer.Option(
    "--wait/--no-wait", help="Wait until the transaction is committed (or dropped).")]


def run(fn: Any, *args: Any) -> Any:
    """:func:`run_async`, letting a command's own exit (``fail`` inside the coroutine) through
    the nurseries it was raised in. The coroutine's local input is checked before it runs,
    so a field missing from a node's answer, or of another type or form, is the node's: one
    error line, not a traceback."""
    try:
        return run_async(fn, *args)
    except Exception as raised:
        exc = single_exception(raised)
        if isinstance(exc, typer.Exit):
            raise exc from None
        if isinstance(exc, MALFORMED_ANSWER):
            fail(f"the node's answer is malformed ({type(exc).__name__}: {exc})", 1)
        raise


def patient_root(path: Path) -> bytes:
    try:
        return load_patient(path)
    except KeyFileError as exc:
        fail(str(exc))


@dataclass(frozen=True, slots=True)
class Reader:
    """Who reads: the patient (its root) or a grantee (its keys)."""

    root: bytes | None
    grantee: GranteeKeys | None


def reader_keys(path: Path) -> Reader:
    """A patient's or a grantee's key file, whichever ``path`` is."""
    try:
        return Reader(load_patient(path), None)
    except KeyFileError as as_patient:
        try:
            return Reader(None, load_grantee(path))
        except KeyFileError as as_grantee:
            wrong_type = ["expected" in str(e) for e in (as_patient, as_grantee)]
            if wrong_type == [False, True]:  # a patient's key file, with a fault of its own
                fail(str(as_patient))
            if wrong_type == [True, False]:  # a grantee's
                fail(str(as_grantee))
            fail(f"neither a patient's nor a grantee's key file: {as_patient}")


def stream_key(root: bytes, chain_id: str, scope: str) -> SigningKey:
    try:
        return derive_stream(root, chain_id, scope)
    except PatientKeyError as exc:
        fail(str(exc))


async def chain_id_of(client: ApiClient, given: str | None) -> str:
    """``given``, else the chain id the node names."""
    return given if given is not None else (await client.call("status"))["chain_id"]


async def stream_view(client: ApiClient, stream: bytes) -> dict[str, Any]:
    """The ledger's view of ``stream`` (``get_stream``): epoch, grants, erased."""
    try:
        view = await client.call("get_stream", stream=stream.hex())
    except ApiError as exc:
        if exc.code == NOT_FOUND:
            fail(f"the ledger does not know stream {stream.hex()[:16]} yet: a device is "
                 "admitted to it first (`iomtnode device admit --stream`, by as many "
                 "authorities as the genesis's admission_threshold, the first one's profile "
                 "salt passed by the others with --profile-salt)", 1)
        raise
    if view["erased"]:
        fail(f"stream {stream.hex()[:16]} was erased: nothing more is granted or recorded in "
             "it", 1)
    return view


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def live_grants(view: dict[str, Any], at_ms: int) -> list[dict[str, Any]]:
    """The grants of a stream view that have not expired at ``at_ms``, by grantee."""
    return sorted((g for g in view["grants"] if g["expires_ms"] > at_ms),
                  key=lambda g: g["grantee"])


async def submit(client: ApiClient, tx: SignedTx, wait: bool) -> dict[str, Any]:
    """Submit ``tx``; with ``wait``, until it is committed (its height is returned) or
    dropped (a clear error with the rule's code)."""
    result = await client.call("submit_tx", tx=tx.raw.hex())
    if not wait:
        return {"id": result["id"], "type": result["type"], "state": "pending"}
    with trio.move_on_after(COMMIT_WAIT_S):
        while True:
            status = await client.call("get_tx_status", id=result["id"])
            if status["state"] == "committed":
                return {"id": result["id"], "type": result["type"], "state": "committed",
                        "height": status["height"]}
            if status["state"] == "dropped":
                fail(f"the {result['type']} was dropped: {status['reason']} "
                     f"(code {status['code']})", 1)
            await trio.sleep(STATUS_POLL_S)
    fail(f"the {result['type']} {result['id']} was not committed within {COMMIT_WAIT_S:.0f} s;"
         " ask `iomtnode receipt` later", 1)
