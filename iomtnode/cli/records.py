"""``iomtnode records fetch``: a patient or a grantee fetches a stream's readings and decrypts
them on this machine (docs/privacy.md, sections 3 and 6); the node never sees a key.

Readings are printed as JSON lines (or written to --out), or exported as a FHIR R4B Bundle
(--fhir), validated before it is written. A reading this reader cannot open is listed as
``unreadable`` with the reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from ..client import ApiClient, ApiError, open_client
from ..core.crypto import SigningKey
from ..patient import reader as rd
from .common import DEFAULT_API, ApiOpt, CaOpt, api_url, fail, hex32
from .streams import NOT_FOUND, ChainOpt, Reader, chain_id_of, reader_keys, run, stream_key

PAGE_READINGS = 500  # readings asked per get_patient_records call
NO_CONSENT = -32025  # the API's refusal of a patient's records to a caller without consent
MAX_PAGES = 100_000  # a fetch stops after this many pages (50 million readings)
OUTPUT_MODE = 0o600  # --out and --fhir files hold decrypted readings: their owner reads them

records_app = typer.Typer(help="Fetch and decrypt a stream's readings on this machine.",
                          no_args_is_help=True)


async def fetch_pages(client: ApiClient, stream: bytes, since_ms: int, until_ms: int
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every reading entry and wrap of ``stream`` the node serves this caller, all pages."""
    readings: list[dict[str, Any]] = []
    wraps: list[dict[str, Any]] = []
    cursor = None
    for _ in range(MAX_PAGES):
        page = await client.call("get_patient_records", stream=stream.hex(), since_ms=since_ms,
                                 until_ms=until_ms, cursor=cursor, limit=PAGE_READINGS)
        readings += page["readings"]
        wraps += page["wraps"]
        cursor = page["cursor"]
        if cursor is None:
            break
    return readings, wraps


async def open_all(client: ApiClient, who: Reader, stream: bytes, chain_id: str,
                   entries: list[dict[str, Any]], wraps: list[dict[str, Any]]
                   ) -> tuple[list[rd.Opened | rd.Unreadable], list[str]]:
    """Each entry opened (fetching class 1 and 2 blobs), and the problems met on the way."""
    ring, problems = rd.keyring_for(who.root, who.grantee, stream, wraps)
    results: list[rd.Opened | rd.Unreadable] = []
    for entry in entries:
        try:
            s = rd.served(entry, chain_id)
        except rd.RecordsError as exc:
            problems.append(f"the node served an entry that is not a genuine reading: {exc}")
            continue
        blob = None
        if not s.inline and s.blob and not s.erased_by:
            try:
                answer = await client.call("get_blob", commitment=s.reading.commitment.hex())
            except ApiError as exc:  # erased or dropped since the listing: unreadable
                if exc.code != NOT_FOUND:
                    raise
            else:
                blob = bytes.fromhex(answer["blob"])
        results.append(rd.open_served(s, ring, chain_id, stream, blob))
    return results, problems


def _write(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only whatever the umask."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OUTPUT_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), OUTPUT_MODE)  # a file that was there keeps no wider mode
            f.write(text)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}")


def _signer(who: Reader, stream: bytes | None, scope: str | None, chain_id: str
            ) -> tuple[SigningKey, bytes]:
    """The key that proves this reader's right, and the stream read."""
    if who.root is not None:
        if scope is None:
            fail("a patient's key file needs --scope to know which stream it reads")
        s = stream_key(who.root, chain_id, scope)
        if stream is not None and stream != s.public:
            fail(f"--stream is not the {scope} stream of this patient key on {chain_id}")
        return s, s.public
    assert who.grantee is not None
    if stream is None:
        fail("a grantee's key file needs --stream")
    return who.grantee.signing, stream


async def _unknown_stream(client: ApiClient, stream: bytes, scope: str | None, chain: str
                          ) -> None:
    """Say why the patient's own stream key was refused when the ledger knows no such stream
    (the node's refusal is the same for every stream, so it cannot say it)."""
    try:
        await client.call("get_stream", stream=stream.hex())
    except ApiError as exc:
        if exc.code == NOT_FOUND:
            fail(f"the ledger knows no {scope} stream of this patient key on {chain} "
                 f"({stream.hex()[:16]}): no device was admitted to it", 1)


@records_app.command("fetch")
def fetch(
    as_key: Annotated[Path, typer.Option(
        "--as", help="The reader's key file: the patient's or a grantee's.")],
    stream: Annotated[str | None, typer.Option(
        help="The stream (hex); a patient may give --scope instead.")] = None,
    scope: Annotated[str | None, typer.Option(
        help="For a patient's key file: the stream's scope.")] = None,
    since_ms: Annotated[int, typer.Option(min=0, help="Readings from this time on.")] = 0,
    until_ms: Annotated[int, typer.Option(min=1, help="... up to this one.")] = 2**64 - 1,
    out: Annotated[Path | None, typer.Option(
        help="Write the readings as JSON lines here instead of stdout.")] = None,
    fhir: Annotated[Path | None, typer.Option(
        help="Write a FHIR R4B Bundle here (validated first).")] = None,
    chain_id: ChainOpt = None,
    api: ApiOpt = DEFAULT_API,
    api_ca: CaOpt = None,
) -> None:
    """Fetch a stream's readings and decrypt them on this machine.

    Exit 0 when every reading opened, 1 when some are unreadable (each listed with the
    reason)."""
    if until_ms < since_ms:
        fail(f"--until-ms ({until_ms}) is before --since-ms ({since_ms}): no reading can be in "
             "that range")
    who = reader_keys(as_key)
    wanted = None if stream is None else hex32("stream", stream)

    async def go() -> tuple[list[rd.Opened | rd.Unreadable], list[str], dict[str, Any] | None]:
        async with open_client(api_url(api), ca=api_ca) as client:
            chain = await chain_id_of(client, chain_id)
            signer, s = _signer(who, wanted, scope, chain)
            await client.authenticate(signer, chain)
            try:
                entries, wraps = await fetch_pages(client, s, since_ms, until_ms)
            except ApiError as exc:
                if exc.code == NO_CONSENT and who.root is not None:
                    await _unknown_stream(client, s, scope, chain)
                raise
            results, problems = await open_all(client, who, s, chain, entries, wraps)
            bundle = None
            if fhir is not None:
                # imported here: the FHIR models take a second to load, which only an export pays
                from .fhirexport import export_bundle

                bundle = await export_bundle(client, s, results, audits=who.root is not None)
            return results, problems, bundle

    results, problems, bundle = run(go)
    for problem in problems:
        typer.echo(f"warning: {problem}", err=True)
    lines = [json.dumps(rd.to_json(r), sort_keys=True) for r in results]
    if out is not None:
        _write(out, "".join(line + "\n" for line in lines))
    elif fhir is None:
        for line in lines:
            typer.echo(line)
    if bundle is not None and fhir is not None:
        _write(fhir, json.dumps(bundle, indent=1, sort_keys=True) + "\n")
    unreadable = sum(1 for r in results if isinstance(r, rd.Unreadable))
    typer.echo(summary_line(len(results) - unreadable, unreadable), err=True)
    if unreadable:
        raise typer.Exit(1)


def summary_line(decrypted: int, unreadable: int) -> str:
    """What a fetch ends with on stderr: "1 reading decrypted, 0 unreadable"."""
    return f"{decrypted} reading{'' if decrypted == 1 else 's'} decrypted, {unreadable} unreadable"
