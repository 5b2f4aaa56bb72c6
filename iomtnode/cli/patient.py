"""``iomtnode patient``: the patient's keys and what the stream key signs (docs/privacy.md,
sections 1, 3 and 5): epochs, grants, revocations, erasure.

Everything derives from the patient's root in the key file; nothing secret leaves this
machine: the ledger gets the stream's public key, epoch public keys, and epoch secrets sealed
to each grantee's box key.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from ..client import open_client
from ..core.crypto import SigningKey
from ..core.fields import U64_MAX
from ..core.tx import EpochAnnounce, Erase, Grant, RevokeGrant, SignedTx, sign_tx
from ..patient import keys as pk
from ..patient import wraps as pw
from ..patient.keyfile import KeyFileError, load_grantee, write_grantee, write_patient
from .common import DEFAULT_API, ApiOpt, CaOpt, JsonOpt, api_url, emit, fail, hex32, hex_bytes
from .streams import (
    ChainOpt,
    KeyOpt,
    ScopeOpt,
    WaitOpt,
    chain_id_of,
    live_grants,
    now_ms,
    patient_root,
    run,
    stream_key,
    stream_view,
    submit,
)

patient_app = typer.Typer(
    help="A patient's keys, streams, epochs, grants, revocations and erasure.",
    no_args_is_help=True)

DURATION_UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
MAX_GRANT_MS = 10 * 365 * 86_400_000  # a grant lasts at most ten years; renew it after
# exit code: the stream's state on the ledger does not allow it (as the ledger would refuse
# the transaction, and as an unknown or erased stream exits); 2 is a wrong option
LEDGER_REFUSED = 1


def duration_ms(text: str) -> int:
    """``30d``, ``12h``, ``90m`` or ``3600s`` in milliseconds (or a clear error)."""
    match = re.fullmatch(r"([1-9][0-9]{0,9})([smhd])", text.strip())
    if match is None:
        fail(f"--expires takes a duration such as 30d, 12h, 90m or 3600s, not {text!r}")
    ms = int(match[1]) * DURATION_UNITS_MS[match[2]]
    if ms > MAX_GRANT_MS:
        fail("a grant lasts at most ten years (3650d)")
    return ms


def iso_ms(name: str, text: str) -> int:
    """An ISO 8601 date or time (UTC unless it names a zone) in ms since the Unix epoch."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{name} must be an ISO 8601 date or time, e.g. 2026-03-01 or "
             f"2026-03-01T08:00:00+01:00, not {text!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    ms = int(moment.timestamp() * 1000)
    if ms < 0:
        fail(f"{name} is before 1970")
    return ms


@patient_app.command("keygen")
def keygen(
    out: Annotated[Path, typer.Option(help="Where to write the key file (mode 0600; never "
                                      "overwritten).")],
    grantee: Annotated[bool, typer.Option(
        "--grantee", help="Make a grantee's keys (a clinician's, a carer's) and print its key "
                          "card for the patient.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Make a patient's root key (the one secret to back up), or a grantee's keys."""
    try:
        if grantee:
            keys = pk.GranteeKeys.generate()
            write_grantee(out, keys)
            card = keys.card().hex()
            emit({"key_file": str(out), "grantee": keys.grantee.hex(), "card": card}, as_json,
                 card)
            return
        write_patient(out, pk.new_root())
    except KeyFileError as exc:
        fail(str(exc))
    emit({"key_file": str(out)}, as_json,
         f"{out}: the patient's root key; back it up offline, nothing can recover it")


@patient_app.command("card")
def card(
    key: Annotated[Path, typer.Option(help="A grantee's key file (from keygen --grantee).")],
    as_json: JsonOpt = False,
) -> None:
    """Print the key card of a grantee's key file again (a grant, or its renewal, needs it)."""
    try:
        keys = load_grantee(key)
    except KeyFileError as exc:
        fail(str(exc))
    text = keys.card().hex()
    emit({"key_file": str(key), "grantee": keys.grantee.hex(), "card": text}, as_json, text)


@patient_app.command("stream")
def stream(
    key: KeyOpt,
    scope: ScopeOpt,
    chain_id: ChainOpt = None,
    api: ApiOpt = DEFAULT_API,
    api_ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a scope's stream key and its stream certificate.

    The stream key is the pseudonym the ledger knows; the certificate (signed by the
    patient's identity key) is what the authority's registration desk checks before it
    admits a device to the stream."""
    root = patient_root(key)
    if chain_id is None:
        async def ask() -> str:
            async with open_client(api_url(api), ca=api_ca) as client:
                return await chain_id_of(client, None)
        chain_id = run(ask)
    s = stream_key(root, chain_id, scope)
    cert = pk.stream_certificate(pk.derive_identity(root), chain_id, s.public, scope)
    emit({"stream": s.public.hex(), "certificate": cert.hex(), "chain_id": chain_id,
          "scope": scope}, as_json, f"stream       {s.public.hex()}\ncertificate  {cert.hex()}")


@patient_app.command("check-certificate")
def check_certificate(
    certificate: Annotated[str, typer.Argument(help="The stream certificate (hex).")],
    as_json: JsonOpt = False,
) -> None:
    """Check a stream certificate (at the authority's desk).

    Prints what it binds: the patient's identity key, the chain, the stream, the scope.
    Exit 1 if it does not verify, 2 if the argument is not hex."""
    raw = hex_bytes("CERTIFICATE", certificate, " (as `iomtnode patient stream` prints it)")
    try:
        identity, chain_id, s, scope = pk.check_certificate(raw)
    except ValueError as exc:
        emit({"valid": False, "reason": str(exc)}, as_json, f"INVALID: {exc}")
        raise typer.Exit(1) from None
    emit({"valid": True, "identity": identity.hex(), "chain_id": chain_id,
          "stream": s.hex(), "scope": scope}, as_json,
         f"VALID: identity {identity.hex()} holds stream {s.hex()} ({scope} on {chain_id})")


def _next_epoch(root: bytes, stream_pub: bytes, view: dict[str, Any],
                drop: bytes = b"") -> tuple[int, bytes, list[bytes], list[tuple[bytes, bytes]]]:
    """(epoch, X_e, grantees, wraps) of the stream's next epoch: every live grant but
    ``drop`` gets the new epoch's secret in its mode, sealed to its box key."""
    epoch = view["epoch"] + 1
    if epoch > pk.EPOCHS_PER_STREAM:
        fail(f"the stream has used all its {pk.EPOCHS_PER_STREAM} epochs: move to a new "
             "stream", LEDGER_REFUSED)
    grants = [(bytes.fromhex(g["grantee"]), bytes.fromhex(g["box"]), g["mode"])
              for g in live_grants(view, now_ms()) if bytes.fromhex(g["grantee"]) != drop]
    pairs = pw.epoch_wraps(root, stream_pub, epoch, grants)
    public = pk.epoch_keypair(pk.epoch_state(root, stream_pub, epoch))[1]
    return epoch, public, [g for g, _ in pairs], pairs


def _submit_signed(api: str, ca: Path | None, key: Path, scope: str, chain_id: str | None,
                   make: Any, wait: bool) -> dict[str, Any]:
    """Connect, derive the stream key on the node's chain, read the stream's ledger view,
    sign what ``make(root, stream key, view, chain id)`` builds, submit it."""
    root = patient_root(key)

    async def go() -> dict[str, Any]:
        async with open_client(api_url(api), ca=ca) as client:
            chain = await chain_id_of(client, chain_id)
            s = stream_key(root, chain, scope)
            view = await stream_view(client, s.public)
            tx = make(root, s, view, chain)
            return {"stream": s.public.hex()} | await submit(client, tx, wait)

    return run(go)


@patient_app.command("epoch")
def epoch(
    key: KeyOpt, scope: ScopeOpt, chain_id: ChainOpt = None, wait: WaitOpt = True,
    api: ApiOpt = DEFAULT_API, api_ca: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """Announce the stream's next epoch.

    Devices seal to its key from then on, and every live grantee gets it wrapped. The first
    epoch needs a device admitted to the stream."""
    def make(root: bytes, s: SigningKey, view: dict[str, Any], chain: str) -> SignedTx:
        e, public, grantees, pairs = _next_epoch(root, s.public, view)
        body = EpochAnnounce(s.public, e, public, grantees, pw.wraps_hash(pairs))
        return sign_tx(body, s, chain, pw.wraps_sidecar(pairs))

    result = _submit_signed(api, api_ca, key, scope, chain_id, make, wait)
    emit(result, as_json, f"{result['state']}: epoch announcement {result['id']}")


@patient_app.command("grant")
def grant(
    key: KeyOpt,
    scope: ScopeOpt,
    card: Annotated[str, typer.Option(help="The grantee's key card (hex), from "
                                      "`iomtnode patient keygen --grantee`.")],
    expires: Annotated[str, typer.Option(help="How long the grant lasts: 30d, 12h, 90m...")],
    history: Annotated[bool, typer.Option(
        "--history", help="Also let the grantee read every earlier epoch (default: from now "
                          "on only).")] = False,
    chain_id: ChainOpt = None, wait: WaitOpt = True,
    api: ApiOpt = DEFAULT_API, api_ca: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """Let a grantee read the stream until --expires.

    The current epoch's secret (with --history, its epoch state, from which every earlier
    epoch's key derives) is sealed to the box key of the grantee's checked key card."""
    raw = hex_bytes("--card", card, " (as `iomtnode patient keygen --grantee` prints it)")
    try:
        grantee, box = pk.check_card(raw)
    except ValueError as exc:
        fail(f"the key card does not check: {exc}")
    lasts_ms = duration_ms(expires)
    mode = pw.HISTORY if history else pw.FORWARD

    def make(root: bytes, s: SigningKey, view: dict[str, Any], chain: str) -> SignedTx:
        e = view["epoch"]
        if e == 0:
            fail("the stream has no epoch yet: announce one first (`iomtnode patient epoch`)",
                 LEDGER_REFUSED)
        wrap = pw.grant_wrap(root, s.public, e, mode, box)
        body = Grant(s.public, grantee, box, now_ms() + lasts_ms, e, mode, pw.wrap_hash(wrap),
                     time.time_ns())
        return sign_tx(body, s, chain, wrap)

    result = _submit_signed(api, api_ca, key, scope, chain_id, make, wait)
    emit(result | {"grantee": grantee.hex(), "mode": pw.MODE_NAMES[mode]}, as_json,
         f"{result['state']}: grant {result['id']} to {grantee.hex()} "
         f"({pw.MODE_NAMES[mode]}); revoke it with --grantee {grantee.hex()}")


@patient_app.command("revoke")
def revoke(
    key: KeyOpt,
    scope: ScopeOpt,
    grantee: Annotated[str, typer.Option(help="The grantee's public key (hex).")],
    chain_id: ChainOpt = None, wait: WaitOpt = True,
    api: ApiOpt = DEFAULT_API, api_ca: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """Withdraw a grant and start the next epoch, in one transaction.

    The remaining grantees get the new epoch's key, the revoked one does not, and devices
    move to it: nothing recorded after the revocation is readable with its keys."""
    revoked = hex32("grantee", grantee)

    def make(root: bytes, s: SigningKey, view: dict[str, Any], chain: str) -> SignedTx:
        if revoked.hex() not in {g["grantee"] for g in view["grants"]}:
            fail(f"grantee {revoked.hex()} holds no grant on the {scope} stream "
                 f"{s.public.hex()[:16]}: revoked already, or never granted (a grant's "
                 "--grantee is printed by `iomtnode patient grant`); nothing was submitted",
                 LEDGER_REFUSED)
        e, public, grantees, pairs = _next_epoch(root, s.public, view, revoked)
        body = RevokeGrant(s.public, revoked, time.time_ns(), e, public, grantees,
                           pw.wraps_hash(pairs))
        return sign_tx(body, s, chain, pw.wraps_sidecar(pairs))

    result = _submit_signed(api, api_ca, key, scope, chain_id, make, wait)
    emit(result, as_json, f"{result['state']}: revocation and next epoch {result['id']}")


@patient_app.command("erase")
def erase(
    key: KeyOpt,
    scope: ScopeOpt,
    since: Annotated[str | None, typer.Option(help="Erase readings from this ISO date or time "
                                              "on (default: the first).")] = None,
    until: Annotated[str | None, typer.Option(help="... up to this one, excluded (default: "
                                              "the last).")] = None,
    chain_id: ChainOpt = None, wait: WaitOpt = True,
    api: ApiOpt = DEFAULT_API, api_ca: CaOpt = None, as_json: JsonOpt = False,
) -> None:
    """Erase the stream's readings in a time range (default: the whole scope).

    Every node deletes the contents (for the whole scope also every key wrapped for
    grantees, and the stream takes nothing more); the signed records and their receipts
    stay, without content."""
    since_ms = 0 if since is None else iso_ms("--since", since)
    until_ms = U64_MAX if until is None else iso_ms("--until", until)
    if since_ms >= until_ms:
        fail("--since must be before --until")

    def make(root: bytes, s: SigningKey, view: dict[str, Any], chain: str) -> SignedTx:
        return sign_tx(Erase(s.public, s.public, since_ms, until_ms, b"", time.time_ns()), s,
                       chain)

    result = _submit_signed(api, api_ca, key, scope, chain_id, make, wait)
    whole = since_ms == 0 and until_ms == U64_MAX
    emit(result | {"since_ms": since_ms, "until_ms": until_ms}, as_json,
         f"{result['state']}: erasure of {'the whole scope' if whole else 'the range'} "
         f"{result['id']}")
