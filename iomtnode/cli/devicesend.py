"""``iomtnode device send``: one reading from a device's key, sealed on this machine to its
stream's current epoch by the device library (:mod:`iomtnode.patient.device`), submitted,
and followed until it is committed or refused for good."""

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
    same sequence number. Exit 0 when committed, 1 when refused."""
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
                fail(f"the reading was not committed within {COMMIT_WAIT_S:.0f} s", 1)
            return outcomes[0].to_json() | {"epoch": session.epoch.number}

    result = run(go)
    if result["state"] == "committed":
        emit(result, as_json, f"committed: reading {result['seq']} in block {result['height']} "
             f"(epoch {result['epoch']})")
    else:
        emit(result, as_json, f"refused: {result['reason']} (code {result['code']})")
        raise typer.Exit(1)
