"""The genesis ceremony: future authorities' cards, and the genesis built from them.

Each future authority makes a *card* with its own node key: its node id (public key), the
address its peers will dial (``HOST:PORT``, HOST a DNS name or an IP) and a name for
people, signed in :attr:`Domain.GENESIS_CARD` on the chain id the card is made for. The
signature proves that whoever made the card holds the key (a card cannot name somebody
else's key), and binds the card to one chain: a card made for one chain never verifies for
another. One person builds the genesis from the cards (:func:`build_genesis`); every
authority checks the genesis against the cards (:func:`check_cards`) and compares its hash
with the others' out of band.

Pure: no files, no clock (the caller passes ``time_ms``). Every refusal is one
:class:`CeremonyError` whose message names the card (its ``source``, e.g. its file) and
the rule.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import hostport
from . import codec
from .crypto import KEY_BYTES, SIG_BYTES, BadSignatureError, Domain, SigningKey, blake2b256, verify
from .genesis import MAX_AUTHORITIES, Genesis, GenesisError
from .window import DEFAULT_REPLAY_WINDOW

CARD_VERSION = 1
MAX_CARD_NAME_CHARS = 64  # a name for people: "St. Mary's, ward 3"
MAX_ADDRESS_CHARS = 300  # a peer record's address limit (p2p/records.py MAX_ADDRESS_BYTES)


class CeremonyError(ValueError):
    """A card, a set of cards or genesis parameters that the ceremony refuses (says which
    card and which rule)."""


class NotACardError(CeremonyError):
    """JSON that is not a card at all (another file given by mistake: a genesis, a config):
    not an object, or without a card's fields (says which)."""


def check_address(address: str, what: str = "address") -> tuple[str, int]:
    """``address`` as ``(host, port)`` if peers can dial it: ``HOST:PORT`` as every setting
    reads it (:mod:`iomtnode.hostport`: ``[v6]:PORT`` for an IPv6 literal), not a wildcard,
    PORT 1 to 65535, at most MAX_ADDRESS_CHARS. Raises :class:`CeremonyError` naming ``what``."""
    if len(address) > MAX_ADDRESS_CHARS:
        raise CeremonyError(f"{what} is longer than {MAX_ADDRESS_CHARS} characters")
    fault = hostport.dial_problem(address)
    if fault is not None:
        raise CeremonyError(f"{what} must be {hostport.DIALABLE}, got {address!r}: {fault}")
    _, host, port = hostport.split(address)
    return host, port


@dataclass(frozen=True, slots=True)
class Card:
    """A future authority's card (module doc); :func:`make_card` or :func:`card_from_json`
    make only cards whose signature verifies."""

    chain_id: str
    node_id: bytes
    address: str
    name: str
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        return {"version": CARD_VERSION, "chain_id": self.chain_id,
                "node_id": self.node_id.hex(), "address": self.address, "name": self.name,
                "signature": self.signature.hex()}


def _digest(node_id: bytes, address: str, name: str) -> bytes:
    return blake2b256(codec.encode([CARD_VERSION, node_id, address, name]))


def _check_name(name: str) -> None:
    if len(name) > MAX_CARD_NAME_CHARS or not name.isprintable():
        raise CeremonyError(f"the name must be at most {MAX_CARD_NAME_CHARS} printable "
                            f"characters, got {name!r:.80}")


def make_card(key: SigningKey, chain_id: str, address: str, name: str = "") -> Card:
    """The card of ``key``'s node for ``chain_id``, dialed at ``address``."""
    check_address(address)
    _check_name(name)
    _check_chain_id(chain_id)
    signature = key.sign(Domain.GENESIS_CARD, chain_id, _digest(key.public, address, name))
    return Card(chain_id, key.public, address, name, signature)


def _check_chain_id(chain_id: str) -> None:
    try:  # the genesis' own rule for chain ids, so a card can only be made for a valid one
        Genesis(chain_id=chain_id, time_ms=0, authorities=(bytes(KEY_BYTES),),
                admission_threshold=1)
    except GenesisError as exc:
        raise CeremonyError(str(exc)) from None


_CARD_FIELDS = ("version", "chain_id", "node_id", "address", "name", "signature")


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return {str: "a string", dict: "an object"}.get(type(value), "a number")


def card_from_json(doc: Any, source: str) -> Card:
    """A card read from untrusted JSON (``source`` names it in errors), its signature
    verified. Raises :class:`NotACardError` for JSON without a card's shape, else
    :class:`CeremonyError` for a card that does not hold."""
    if not isinstance(doc, dict):
        raise NotACardError(f"{source} is not a card: a card is a JSON object, this is "
                            f"{_json_kind(doc)}")
    missing = [f for f in _CARD_FIELDS if f not in doc]
    if missing:
        raise NotACardError(f"{source} is not a card: it lacks {', '.join(missing)} (cards "
                            "are made by iomtnode genesis card)")
    version = doc["version"]
    if type(version) is not int:
        raise NotACardError(f"{source} is not a card: its version is {_json_kind(version)}, "
                            "not a number")
    if version != CARD_VERSION:
        raise NotACardError(f"{source} is a card of version {version}; this iomtnode reads "
                            f"version {CARD_VERSION}")
    for field in _CARD_FIELDS[1:]:
        if not isinstance(doc[field], str):
            raise NotACardError(f"{source} is not a card: its {field} is "
                                f"{_json_kind(doc[field])}, not a string")
    try:
        node_id, signature = bytes.fromhex(doc["node_id"]), bytes.fromhex(doc["signature"])
    except ValueError:
        raise CeremonyError(f"{source}: node_id and signature must be hex") from None
    if len(node_id) != KEY_BYTES or len(signature) != SIG_BYTES:
        raise CeremonyError(f"{source}: node_id must be {KEY_BYTES} bytes and signature "
                            f"{SIG_BYTES}")
    chain_id, address, name = doc["chain_id"], doc["address"], doc["name"]
    try:
        check_address(address, "the card's address")
        _check_name(name)
        _check_chain_id(chain_id)
    except CeremonyError as exc:
        raise CeremonyError(f"{source}: {exc}") from None
    try:
        verify(node_id, Domain.GENESIS_CARD, chain_id, _digest(node_id, address, name),
               signature)
    except BadSignatureError:
        raise CeremonyError(f"{source}: the card's signature does not verify (the card was "
                            "changed after it was signed, or not signed by the key it "
                            "names)") from None
    return Card(chain_id, node_id, address, name, signature)


def check_cards(chain_id: str, cards: Sequence[tuple[str, Card]]) -> None:
    """Refuse cards (``(source, card)`` pairs) made for another chain than ``chain_id``, two
    cards of one key, or two cards of one address."""
    ids: dict[bytes, str] = {}
    addresses: dict[str, str] = {}
    for source, card in cards:
        if card.chain_id != chain_id:
            raise CeremonyError(f"{source}: the card was made for chain {card.chain_id!r}, "
                                f"not {chain_id!r}")
        if card.node_id in ids:
            raise CeremonyError(f"{source} and {ids[card.node_id]} are cards of the same key "
                                f"{card.node_id.hex()[:16]}...: each authority gives one card")
        if card.address in addresses:
            raise CeremonyError(f"{source} and {addresses[card.address]} give the same "
                                f"address {card.address}")
        ids[card.node_id] = source
        addresses[card.address] = source


def default_admission_threshold(authorities: int) -> int:
    """A majority of the authorities approves a device unless the chain says otherwise."""
    return authorities // 2 + 1


def build_genesis(chain_id: str, cards: Sequence[tuple[str, Card]], *, time_ms: int,
                  admission_threshold: int | None = None,
                  replay_window: int = DEFAULT_REPLAY_WINDOW) -> Genesis:
    """The genesis of ``chain_id`` whose authorities are the cards' keys, sorted (so the
    same cards and time give the same genesis, whatever their order). Raises
    :class:`CeremonyError`."""
    if not 1 <= len(cards) <= MAX_AUTHORITIES:
        raise CeremonyError(f"a genesis needs 1 to {MAX_AUTHORITIES} cards, got {len(cards)}")
    check_cards(chain_id, cards)
    n = len(cards)
    threshold = default_admission_threshold(n) if admission_threshold is None \
        else admission_threshold
    if not 1 <= threshold <= n:
        raise CeremonyError(f"the admission threshold must be from 1 to {n} (the number of "
                            f"authorities), got {threshold}")
    try:
        return Genesis(chain_id=chain_id, time_ms=time_ms,
                       authorities=tuple(sorted(c.node_id for _, c in cards)),
                       admission_threshold=threshold, replay_window=replay_window)
    except GenesisError as exc:
        raise CeremonyError(str(exc)) from None


def check_genesis_cards(genesis: Genesis, cards: Sequence[tuple[str, Card]]) -> None:
    """Refuse cards that do not belong to ``genesis``: made for another chain, duplicated,
    or of a key that is not one of its authorities."""
    check_cards(genesis.chain_id, cards)
    members = set(genesis.authorities)
    for source, card in cards:
        if card.node_id not in members:
            raise CeremonyError(f"{source}: the card's key {card.node_id.hex()[:16]}... is "
                                "not an authority of this genesis")


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a node of the ceremony is dialed, and whom it dials (from the cards)."""

    advertise_address: str  # its own card's address ("" when its card was not given)
    bootnodes: tuple[str, ...]  # the other cards' addresses, in the cards' order


def placement(own: bytes, cards: Iterable[Card]) -> Placement:
    """``own`` node's advertised address and bootnodes among ``cards``."""
    cards = list(cards)
    mine = [c.address for c in cards if c.node_id == own]
    return Placement(mine[0] if mine else "",
                     tuple(c.address for c in cards if c.node_id != own))
