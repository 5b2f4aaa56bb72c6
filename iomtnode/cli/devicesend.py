"""``iomtnode device send``: one reading from a device's key, sealed on this machine to its
stream's current epoch by the device library (:mod:`iomtnode.patient.device`), submitted,
and followed until it is committed or refused for good; it says which of the outcomes of
docs/readings.md ("Accepted means final or told") it was, each with its own exit code."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ..client import open_client
from ..home import HomeError, read_key
from ..patient import plaintext as pt
from ..patient.device import DeviceError, DeviceSession
from .common import DEFAULT_API, ApiOpt, CaOpt, JsonOpt, api_url, emit, fail, hex32
from .streams import COMMIT_WAIT_S, ChainOpt, chain_id_of, run

# exit codes, one per outcome (1: the node could not be asked, or refused the device itself;
# 2: this command's input)
EXIT_REFUSED = 3  # refused at admission: the node never took the reading
EXIT_DROPPED = 4  # accepted, then dropped by the node: not on the ledger
EXIT_UNKNOWN = 5  # accepted, and not known to be committed: still pending, or lost
EXITS = {"committed": 0, "refused": EXIT_REFUSED, "dropped": EXIT_DROPPED,
         "lost": EXIT_UNKNOWN, "pending": EXIT_UNKNOWN}

KINDS = {name: kind for kind, name in pt.KIND_NAMES.items() if kind != pt.ECG}
CLASSES = {name: c for c, name in pt.DEVICE_CLASS_NAMES.items()}


def device_send(
    key: Annotated[Path, typer.Option("--key", help="The device's key file (`device keygen`).")],
    stream: Annotated[str, typer.Option(help="The stream the device was paired with (hex).")],
    kind: Annotated[str, typer.Option(help=f"One of {', '.join(KINDS)}.")],
    value: Annotated[list[int], typer.Option(
        help="The measurement: bpm, % SpO2, hundredths of a degree Celsius, or systolic then "
             "diastolic mmHg (--value twice).")],
    device_class: Annotated[str, typer.Option(
        "--class", help=f"One of {', '.join(CLASSES)} (for FHIR Device.type).")] = "wearable",
    chain_id: ChainOpt = None,
    api: ApiOpt = DEFAULT_API,
    api_ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Seal, sign and submit one reading; wait until it is committed.

    The reading is sealed to the stream's current epoch (whose announcement must be signed
    by the stream key); one refused for a stale epoch is re-sealed and sent again with the
    same sequence number. It prints what became of it (with --json, its "state"):

    \b
    committed  in block H                                             exit 0
    refused    at admission (code, reason): the node never took it    exit 3
    dropped    accepted, then dropped by the node (code, reason)      exit 4
    lost       accepted, then unknown to the node each time it went   exit 5
    pending    accepted, not committed within 30 s (`receipt ID`)     exit 5

    Exit 1: the node could not be reached or refused the device itself (not in this stream,
    revoked, no epoch); exit 2: a wrong option."""
    if kind not in KINDS:
        fail(f"--kind must be one of {', '.join(KINDS)}")
    if device_class not in CLASSES:
        fail(f"--class must be one of {', '.join(CLASSES)}")
    try:
        device = read_key(key)
    except (HomeError, OSError) as exc:
        fail(str(exc))
    paired = hex32("stream", stream)
    try:
        plain = pt.Plaintext(KINDS[kind], time.time_ns() // 1_000_000, tuple(value),
                             device_class=CLASSES[device_class])
    except pt.PlaintextError as exc:
        fail(str(exc))

    async def go() -> dict[str, Any]:
        async with open_client(api_url(api), ca=api_ca) as client:
            chain = await chain_id_of(client, chain_id)
            try:
                session = await DeviceSession.open(client, device, paired, chain)
                refused = await session.submit([session.seal(plain)])
                outcomes = refused or await session.settle(COMMIT_WAIT_S)
            except DeviceError as exc:
                fail(str(exc), 1)
            if not outcomes:
                waiting = session.pending[0]
                return {"seq": waiting.seq, "id": waiting.tx.id.hex(), "state": "pending",
                        "waited_s": COMMIT_WAIT_S, "epoch": session.epoch.number}
            return outcomes[0].to_json() | {"epoch": session.epoch.number}

    result = run(go)
    emit(result, as_json, _told(result))
    if EXITS[result["state"]]:
        raise typer.Exit(EXITS[result["state"]])


def _told(result: dict[str, Any]) -> str:
    """The outcome of a reading, in one line for an operator."""
    seq, tx_id = result["seq"], result["id"]
    match result["state"]:
        case "committed":
            return (f"committed: reading {seq} in block {result['height']} "
                    f"(epoch {result['epoch']})")
        case "refused":
            return (f"refused at admission: {result['reason']} (code {result['code']}); the "
                    f"node did not take reading {seq}")
        case "dropped":
            return (f"accepted, then dropped by the node: {result['reason']} (code "
                    f"{result['code']}); reading {seq} ({tx_id}) is not on the ledger")
        case "lost":
            return (f"accepted, then lost: the node had no record of reading {seq} ({tx_id}) "
                    f"each time it was sent; whether it is on the ledger is unknown")
        case _:
            return (f"accepted, not committed within {result['waited_s']:.0f} s: reading {seq} "
                    f"is pending; ask later: iomtnode receipt {tx_id}")
