"""``iomtnode device``: device keys, their admission or revocation by an authority, and what
the ledger holds of a device (for the device, its patient or an authority)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ..core.crypto import SigningKey
from ..core.tx import AdmitDevice, RevokeDevice, sign_tx
from ..home import HomeError, read_key, write_key
from .common import (
    DEFAULT_API,
    ApiOpt,
    CaOpt,
    JsonOpt,
    api_url,
    authority_key,
    call,
    emit,
    fail,
    hex32,
    run_async,
)

device_app = typer.Typer(help="Device keys and their admission or revocation.",
                         no_args_is_help=True)


@device_app.command("keygen")
def device_keygen(
    out: Annotated[Path, typer.Option(help="Where to write the private key (mode 0600).")],
    as_json: JsonOpt = False,
) -> None:
    """Make a device key pair; print the public key (the device id)."""
    key = SigningKey.generate()
    try:
        write_key(out, key)
    except (HomeError, OSError) as exc:
        fail(str(exc))
    emit({"device": key.public.hex(), "key_file": str(out)}, as_json, key.public.hex())


@device_app.command("admit")
def device_admit(
    device: Annotated[str, typer.Argument(help="The device's public key (hex).")],
    patient: Annotated[str, typer.Option(help="The patient's public key (hex).")],
    home: Annotated[Path, typer.Option("--home", help="An authority's home (its key signs).")],
    device_class: Annotated[str, typer.Option("--class", help="e.g. wearable, implant.")
                            ] = "wearable",
    manufacturer: Annotated[str, typer.Option()] = "unknown",
    api: ApiOpt = DEFAULT_API,
    api_ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a device's admission, signed with the authority key in --home."""
    key, genesis = authority_key(home)
    try:
        tx = sign_tx(AdmitDevice(key.public, hex32("device", device), hex32("patient", patient),
                                 device_class, manufacturer), key, genesis.chain_id)
    except ValueError as exc:
        fail(str(exc))
    result = run_async(lambda: call(api_url(api), "submit_tx", ca=api_ca, tx=tx.raw.hex()))
    emit(result, as_json, f"submitted admission {result['id']}")


@device_app.command("revoke")
def device_revoke(
    device: Annotated[str, typer.Argument(help="The device's public key (hex).")],
    home: Annotated[Path, typer.Option("--home", help="An authority's home (its key signs).")],
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "revoked by operator",
    api: ApiOpt = DEFAULT_API,
    api_ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a device for good, signed with the authority key in --home."""
    key, genesis = authority_key(home)
    body = RevokeDevice(key.public, hex32("device", device), reason, time.time_ns())
    tx = sign_tx(body, key, genesis.chain_id)
    result = run_async(lambda: call(api_url(api), "submit_tx", ca=api_ca, tx=tx.raw.hex()))
    emit(result, as_json, f"submitted revocation {result['id']}")


@device_app.command("show")
def device_show(
    device: Annotated[str, typer.Argument(help="The device's public key (hex).")],
    key: Annotated[Path | None, typer.Option(
        "--key", help="A key file of the device itself or of its patient (as `device keygen` "
                      "writes them).")] = None,
    home: Annotated[Path | None, typer.Option(
        "--home", help="An authority's home (its key is used).")] = None,
    api: ApiOpt = DEFAULT_API,
    api_ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a device's registration (patient, class, status, last sequence number).

    The node answers only a party to the device: the connection proves --key (the device or
    its patient) or the authority key in --home first."""
    if (key is None) == (home is None):
        fail("give exactly one of --key and --home")
    if key is not None:
        try:
            signer = read_key(key)
        except (HomeError, OSError) as exc:
            fail(str(exc))
    else:
        signer = authority_key(home)[0]
    hex32("device", device)
    result = run_async(lambda: call(api_url(api), "get_device", ca=api_ca, signer=signer,
                                    id=device))
    emit(result, as_json)
