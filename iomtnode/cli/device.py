"""``iomtnode device``: device keys, their admission to a patient's stream or revocation by an
authority, and what the ledger holds of a device (for the device, its stream or an
authority)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ..client import ApiError
from ..core.crypto import SigningKey
from ..core.errors import ConflictingAdmissionError
from ..core.payload import SALT_BYTES, profile_hash
from ..core.tx import AdmitDevice, RevokeDevice, sign_tx
from ..home import HomeError, read_key, write_key
from ..patient.keyfile import KeyFileError, load_patient
from ..service import single_exception
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
from .streams import patient_root, stream_key

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


def _profile_salt(value: str | None) -> bytes:
    """The salt of a device's profile hash: ``value`` (hex), or fresh random bytes."""
    if value is None:
        return secrets.token_bytes(SALT_BYTES)
    try:
        salt = bytes.fromhex(value)
    except ValueError:
        fail("--profile-salt must be hex")
    if len(salt) != SALT_BYTES:
        fail(f"--profile-salt must be {SALT_BYTES} bytes ({2 * SALT_BYTES} hex digits)")
    return salt


@device_app.command("admit")
def device_admit(
    device: Annotated[str, typer.Argument(help="The device's public key (hex).")],
    stream: Annotated[str, typer.Option(
        help="The public key (hex) of the patient's stream the device records into: the "
             "pseudonym the patient's stream certificate names.")],
    home: Annotated[Path, typer.Option("--home", help="An authority's home (its key signs).")],
    device_class: Annotated[str, typer.Option("--class", help="e.g. wearable, implant.")
                            ] = "wearable",
    manufacturer: Annotated[str, typer.Option(
        help="The device's maker (hashed with --class: the ledger holds neither).")
    ] = "unknown",
    profile_salt: Annotated[str | None, typer.Option(
        help=f"The salt of the profile hash ({SALT_BYTES} bytes, hex): every authority that "
             "approves the same device must give the same one (the first approval prints "
             "it). Default: fresh random bytes.")] = None,
    api: ApiOpt = DEFAULT_API,
    api_ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a device's admission to a stream, signed with the authority key in --home.

    The ledger gets only a salted hash of the device's class and manufacturer (they would
    say what it measures); keep the salt with the registration, beside the class and maker."""
    key, genesis = authority_key(home)
    salt = _profile_salt(profile_salt)
    profile = profile_hash(salt, device_class, manufacturer)
    try:
        tx = sign_tx(AdmitDevice(key.public, hex32("device", device), hex32("stream", stream),
                                 profile), key, genesis.chain_id)
    except ValueError as exc:
        fail(str(exc))

    async def submit() -> dict[str, Any]:
        try:
            return await call(api_url(api), "submit_tx", ca=api_ca, tx=tx.raw.hex())
        except Exception as raised:  # 1012: most often a second approval with a salt of its own
            exc = single_exception(raised)
            if (not isinstance(exc, ApiError) or exc.code != ConflictingAdmissionError.code
                    or profile_salt is not None):
                raise
            raise ApiError(exc.code, f"{exc.message}: another authority approved it first; "
                           "give the profile salt its `device admit` printed with "
                           "--profile-salt, and the same --stream, --class and "
                           "--manufacturer", exc.data) from None

    result = {**run_async(submit), "profile_hash": profile.hex(), "profile_salt": salt.hex()}
    emit(result, as_json, f"submitted admission {result['id']} (profile salt {salt.hex()})")


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
        "--key", help="The device's key file (`device keygen`), or the patient's "
                      "(`patient keygen`) with --scope.")] = None,
    scope: Annotated[str | None, typer.Option(
        "--scope", help="With the patient's --key: the scope of the device's stream.")] = None,
    home: Annotated[Path | None, typer.Option(
        "--home", help="An authority's home (its key is used).")] = None,
    api: ApiOpt = DEFAULT_API,
    api_ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a device's registration (stream, profile hash, status, last sequence number).

    The node answers only a party to the device: the connection proves --key (the device, or
    the patient's stream of --scope) or the authority key in --home first."""
    if (key is None) == (home is None):
        fail("give exactly one of --key and --home")
    if scope is not None and key is None:
        fail("--scope goes with the patient's --key")
    if key is not None and scope is not None:
        root = patient_root(key)
        chain_id = run_async(lambda: call(api_url(api), "status", ca=api_ca))["chain_id"]
        signer = stream_key(root, chain_id, scope)
    elif key is not None:
        try:
            signer = read_key(key)
        except (HomeError, OSError) as exc:
            try:
                load_patient(key)
            except KeyFileError:
                fail(str(exc))
            fail(f"{key} is a patient's key file: add --scope SCOPE to prove that stream")
    else:
        signer = authority_key(home)[0]
    hex32("device", device)
    result = run_async(lambda: call(api_url(api), "get_device", ca=api_ca, signer=signer,
                                    id=device))
    emit(result, as_json)
