"""``iomtnode genesis card | new | verify``: the ceremony that starts a network across hosts.

Each future authority makes its home (``iomtnode init --no-genesis``) and its card
(``genesis card``: its key, the address its peers dial, signed); one person builds the
genesis from every card (``genesis new``); every authority checks it (``genesis verify``),
compares the hash with the others' out of band and installs it (``--install``), which also
points its config at the other cards' addresses. The rules are in
:mod:`iomtnode.core.ceremony`; docs/network.md walks through it.

Results go to stdout (JSON with ``--json``), errors to stderr: exit 1 when a check fails
(a bad card, a genesis this home is not part of, a hash that differs), 2 for input that
cannot be read (a file that is not a card or not a genesis at all).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import time
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer

from ..chain.chain import META_GENESIS
from ..config import ConfigError, load_config, parse_hostport
from ..core.ceremony import (
    Card,
    CeremonyError,
    NotACardError,
    build_genesis,
    card_from_json,
    check_genesis_cards,
    make_card,
    placement,
)
from ..core.genesis import Genesis, GenesisError
from ..core.window import DEFAULT_REPLAY_WINDOW
from ..home import Home, HomeError
from ..store import BlockStore, StoreError
from ..store.files import write_atomic
from .common import HomeOpt, JsonOpt, emit, fail

MAX_CARD_FILE_BYTES = 64 * 1024  # a card is about 400 bytes; anything this big is not one
NEW_FILE_MODE = 0o666  # a card or a genesis holds no secret: readable as the umask lets it
CHECK_FAILED = 1  # exit code: the ceremony refused (unreadable input exits 2)

genesis_app = typer.Typer(help="The genesis ceremony: start a network of several authorities.",
                          no_args_is_help=True)

CardsOpt = Annotated[list[Path] | None, typer.Option(
    "--card", help="A card file (from iomtnode genesis card); repeat for each authority.")]


def read_card(path: Path) -> Card:
    """The card in ``path``, its signature verified (or a clear error naming the file)."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CARD_FILE_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read the card {path}: {exc.strerror or exc}")
    if len(raw) > MAX_CARD_FILE_BYTES:
        fail(f"{path} is not a card: over {MAX_CARD_FILE_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        fail(f"{path} is not a card: not JSON")
    try:
        return card_from_json(doc, str(path))
    except NotACardError as exc:  # another file given for a card: input, not a check
        fail(str(exc))
    except CeremonyError as exc:
        fail(str(exc), CHECK_FAILED)


def write_new(out: Path, text: str) -> None:
    """Write ``text`` to ``out``, which must not exist, whole or not at all
    (:func:`write_atomic`: a full disk or a crash midway leaves no file, torn or whole, and
    the command can be run again), or fail with the reason."""
    if out.exists():
        fail(f"{out} exists; refusing to overwrite it")
    try:
        write_atomic(out, text.encode(), NEW_FILE_MODE)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc} (nothing was written)")


def _cards(paths: list[Path] | None) -> list[tuple[str, Card]]:
    return [(str(p), read_card(p)) for p in paths or []]


@genesis_app.command("card")
def card(
    home: HomeOpt,
    chain_id: Annotated[str, typer.Option(
        help="The chain the card is for (the card is valid for this chain only).")],
    address: Annotated[str, typer.Option(
        help="HOST:PORT the other authorities dial this node at: a DNS name or a routable "
             "IP, and the p2p port (7546 by default).")],
    name: Annotated[str, typer.Option(help="A name for people (the hospital, the site).")
                    ] = "",
    out: Annotated[Path | None, typer.Option(
        help="Write the card to this file (default: print it on stdout).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """This authority's card: its node id and address, signed by its node key."""
    try:
        made = make_card(Home(home).load_key(), chain_id, address, name)
    except HomeError as exc:
        fail(str(exc))
    except CeremonyError as exc:
        fail(str(exc), CHECK_FAILED)
    text = json.dumps(made.to_json(), indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
        return
    write_new(out, text)
    emit({"card": str(out), **made.to_json()}, as_json,
         f"card of {made.node_id.hex()} at {made.address} written to {out}")


@genesis_app.command("new")
def new(
    chain_id: Annotated[str, typer.Option(help="The new chain's name.")],
    out: Annotated[Path, typer.Option(help="Where to write genesis.json.")],
    cards: CardsOpt = None,
    admission_threshold: Annotated[int | None, typer.Option(
        help="Authority approvals needed to admit a device (default: a majority).")] = None,
    replay_window: Annotated[int, typer.Option(
        help="How far a device's reading may lag its highest sequence number.")
    ] = DEFAULT_REPLAY_WINDOW,
    time_ms: Annotated[int | None, typer.Option(
        help="The genesis time, ms since the epoch (default: now; give it to rebuild the "
             "same genesis from the same cards).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build a genesis whose authorities are the cards' keys, after checking every card."""
    read = _cards(cards)
    try:
        genesis = build_genesis(chain_id, read, admission_threshold=admission_threshold,
                                replay_window=replay_window,
                                time_ms=int(time.time() * 1000) if time_ms is None else time_ms)
    except CeremonyError as exc:
        fail(str(exc), CHECK_FAILED)
    by_id = {c.node_id: c.address for _, c in read}
    write_new(out, genesis.to_text())
    result = {"genesis_hash": genesis.hash.hex(), "chain_id": genesis.chain_id,
              "authorities": [a.hex() for a in genesis.authorities],
              "bootnodes": [by_id[a] for a in genesis.authorities]}
    emit(result, as_json, f"genesis of {chain_id} with {len(read)} authorities written to "
                          f"{out}\nhash {result['genesis_hash']}\ncompare this hash with "
                          "every authority's iomtnode genesis verify")


@genesis_app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="The genesis.json to check.")],
    home: HomeOpt,
    expect_hash: Annotated[str | None, typer.Option(
        help="The hash the genesis must have (as told by its maker, out of band).")] = None,
    cards: CardsOpt = None,
    install: Annotated[bool, typer.Option(
        "--install", help="Install it as the home's genesis.json; with --card, also set "
                          "bootnodes (the other cards' addresses) and advertise_address "
                          "(this node's card's) in the home's config.toml.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check a genesis: readable, this home's key is one of its authorities, the cards (if
    given) are its authorities', its hash is the one expected; print the hash."""
    try:
        genesis = Genesis.load(file)
        h = Home(home)
        node_id = h.load_key().public
    except (GenesisError, HomeError) as exc:
        fail(str(exc))
    digest = genesis.hash.hex()
    if expect_hash is not None and expect_hash.strip().lower() != digest:
        fail(f"{file} hashes to {digest}, not the expected {expect_hash}", CHECK_FAILED)
    if node_id not in genesis.authorities:
        fail(f"the key of {home} (node id {node_id.hex()}) is not among the "
             f"{len(genesis.authorities)} authorities of {file}: wrong home, or a genesis "
             "built without this authority's card", CHECK_FAILED)
    read = _cards(cards)
    try:
        check_genesis_cards(genesis, read)
    except CeremonyError as exc:
        fail(str(exc), CHECK_FAILED)
    result: dict[str, Any] = {"genesis_hash": digest, "chain_id": genesis.chain_id,
                              "authorities": [a.hex() for a in genesis.authorities],
                              "node_id": node_id.hex(), "installed": False, "config": None}
    if install:
        result["installed"] = _install(h, genesis)
        if read:
            result["config"] = _configure(h, [c for _, c in read], node_id)
        elif len(genesis.authorities) > 1 and _no_peers(h):
            typer.echo(f"warning: no --card given, and {h.config_path} names no bootnodes: "
                       "this node will find no peer. Run this again with every authority's "
                       "--card (it sets bootnodes and advertise_address), or set bootnodes",
                       err=True)
    text = f"genesis {genesis.chain_id} hash {digest}\nthis node {node_id.hex()} is one of " \
           f"its {len(genesis.authorities)} authorities"
    if install:
        text += f"\ninstalled as {h.genesis_path}"
    if result["config"]:
        text += "\n" + "\n".join(f"{k} = {_toml(v)}" for k, v in result["config"].items())
    emit(result, as_json, text)


def _no_peers(h: Home) -> bool:
    """Whether ``h``'s config.toml names no bootnodes (one that cannot be read: not here)."""
    try:
        return not load_config(h.config_path, env={}).bootnodes
    except ConfigError:
        return False


def _install(h: Home, genesis: Genesis) -> bool:
    """Write ``genesis`` as ``h``'s genesis.json; False if it is there already. Refuses a
    home with another genesis, or whose data/ holds another chain's blocks."""
    if h.genesis_path.exists():
        try:
            there = Genesis.load(h.genesis_path)
        except GenesisError as exc:
            fail(f"{h.genesis_path} exists and cannot be read ({exc}); move it away first")
        if there.hash == genesis.hash:
            return False
        fail(f"{h.path} already has the genesis of chain {there.chain_id} "
             f"({there.hash.hex()[:16]}...): a home belongs to one chain; make a new home "
             f"for this key: iomtnode init --home NEW --no-genesis --key-file "
             f"{h.key_path} (the card names the key, not the home)", CHECK_FAILED)
    try:
        with BlockStore.open(h.data_path) as store:  # locked: refused while a node runs
            stored = store.get_meta(META_GENESIS)
    except StoreError as exc:
        fail(str(exc))
    if stored is not None and stored != genesis.hash:
        fail(f"{h.data_path} holds the blocks of chain {stored.hex()[:16]}..., not of this "
             f"genesis ({genesis.hash.hex()[:16]}...): refusing to mix two chains in one "
             "home; make a new home", CHECK_FAILED)
    try:
        h.save_genesis(genesis)
    except OSError as exc:
        fail(f"cannot write {h.genesis_path}: {exc.strerror or exc} (the home is as it was)")
    return True


def _configure(h: Home, cards: list[Card], node_id: bytes) -> dict[str, Any]:
    """Point ``h``'s config at the cards: bootnodes, advertise_address and, when it listens
    on loopback only, ``p2p_listen`` on every interface at its card's port (every IPv6
    interface for a card at an IPv6 address; the card's own address for a card at a
    loopback address, which no other host dials)."""
    plan = placement(node_id, cards)
    try:
        config = load_config(h.config_path, env={})  # the file's values, not this shell's
        changes: dict[str, Any] = {"bootnodes": plan.bootnodes}
        if plan.advertise_address:
            changes["advertise_address"] = plan.advertise_address
            host, listen_port = parse_hostport(config.p2p_listen, "p2p_listen")
            card_host, port = parse_hostport(plan.advertise_address)
            if _is_loopback(host):
                every = "[::]" if _is_ipv6(card_host) else "0.0.0.0"  # the card's family
                if _is_loopback(card_host):  # a test network on one host: no other to reach
                    every = f"[{card_host}]" if _is_ipv6(card_host) else card_host
                changes["p2p_listen"] = f"{every}:{port}"
            elif listen_port != port:  # the operator's own listen address: kept, but said
                typer.echo(f"warning: this node's card advertises port {port}, and peers will "
                           f"dial it there, but {h.config_path} has p2p_listen = "
                           f"{config.p2p_listen!r} (port {listen_port}): right only behind a "
                           f"port forward from {port}; otherwise set p2p_listen to port "
                           f"{port}", err=True)
        config = dataclasses.replace(config, **changes)
        text = h.config_path.read_text() if h.config_path.exists() else ""
        edited = h.config_path.with_name(h.config_path.name + ".new")
        try:
            new_text = set_settings(text, changes)
            edited.write_text(new_text)
            if load_config(edited, env={}) != config:  # what the node will read
                raise ConfigError(f"editing it in place would not give {changes}")
            mode = h.config_path.stat().st_mode & 0o777 if h.config_path.exists() else 0o644
            write_atomic(h.config_path, new_text.encode(), mode)  # whole, or as it was
        finally:
            edited.unlink(missing_ok=True)
    except (ConfigError, OSError) as exc:
        fail(f"cannot update {h.config_path}: {exc}")
    return {"advertise_address": config.advertise_address, "bootnodes": list(config.bootnodes),
            "p2p_listen": config.p2p_listen}


def set_settings(text: str, changes: dict[str, Any]) -> str:
    """config.toml ``text`` with each setting of ``changes`` set, edited in place: every
    other line (the operator's comments and settings) stays as it was. A setting's line (or
    lines, for an array written over several) is replaced; a setting not in ``text`` is
    appended."""
    lines = text.splitlines(keepends=True)
    for key, value in changes.items():
        line = f"{key} = {_toml(value)}\n"
        start = next((i for i, s in enumerate(lines)
                      if re.match(rf"\s*([\"']?){re.escape(key)}\1\s*=", s)), None)
        if start is None:
            lines += ([] if not lines or lines[-1].endswith("\n") else ["\n"]) + [line]
            continue
        end = start + 1  # the assignment ends where its lines parse as TOML
        while not _parses("".join(lines[start:end])):
            if end == len(lines):
                raise ConfigError(f"cannot tell where the setting {key} ends")
            end += 1
        lines[start:end] = [line]
    return "".join(lines)


def _toml(value: Any) -> str:
    """A setting's value as TOML (JSON's string escapes are TOML's)."""
    if isinstance(value, tuple | list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return json.dumps(value)


def _parses(text: str) -> bool:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return True


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:  # a name
        return False


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
