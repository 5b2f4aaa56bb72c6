"""The genesis ceremony's rules: a card proves its key and binds its chain; the genesis is
built only from good cards, the same whatever their order."""

from __future__ import annotations

import pytest

from iomtnode.core.ceremony import (
    CeremonyError,
    NotACardError,
    build_genesis,
    card_from_json,
    check_address,
    check_genesis_cards,
    make_card,
    placement,
)
from iomtnode.core.crypto import SigningKey

KEYS = [SigningKey(bytes([i]) * 32) for i in range(1, 5)]  # authorities A, B, C, D
CHAIN = "ward-net"


def cards(chain: str = CHAIN) -> list[tuple[str, object]]:
    return [(f"node{i}.card", make_card(k, chain, f"node{i}.hospital.example:7546", f"n{i}"))
            for i, k in enumerate(KEYS)]


def test_a_card_read_back_verifies_and_keeps_every_field():
    card = make_card(KEYS[0], CHAIN, "node0.example:7546", "St. Mary's")
    again = card_from_json(card.to_json(), "a.card")
    assert again == card


@pytest.mark.parametrize("field, value", [
    ("address", "evil.example:7546"),  # redirecting the authority's peers
    ("name", "someone else"),
    ("node_id", KEYS[1].public.hex()),  # claiming another key
    ("chain_id", "other-net"),  # reusing a card made for another chain
])
def test_a_card_changed_after_signing_is_refused_naming_its_file(field, value):
    doc = make_card(KEYS[0], CHAIN, "node0.example:7546").to_json()
    doc[field] = value
    with pytest.raises(CeremonyError, match=r"^tampered\.card: the card's signature"):
        card_from_json(doc, "tampered.card")


@pytest.mark.parametrize("doc, match", [
    ([], r"^x\.card is not a card: a card is a JSON object, this is an array$"),
    ({}, r"^x\.card is not a card: it lacks version, chain_id, node_id, address, name, "
         r"signature \(cards are made by iomtnode genesis card\)$"),
    ({"version": 1, "chain_id": CHAIN, "time_ms": 0, "authorities": [],  # a genesis
      "admission_threshold": 1}, r"it lacks node_id, address, name, signature "),
    ({**make_card(KEYS[0], CHAIN, "a.example:7546").to_json(), "version": 2},
     r"^x\.card is a card of version 2; this iomtnode reads version 1$"),
    ({**make_card(KEYS[0], CHAIN, "a.example:7546").to_json(), "version": True},
     r"its version is true, not a number"),
    ({**make_card(KEYS[0], CHAIN, "a.example:7546").to_json(), "node_id": None},
     r"^x\.card is not a card: its node_id is null, not a string$"),
])
def test_json_that_is_not_a_card_is_refused_as_such(doc, match):
    with pytest.raises(NotACardError, match=match):
        card_from_json(doc, "x.card")


def test_a_card_with_a_field_that_does_not_hold_is_a_bad_card_not_another_file():
    doc = {**make_card(KEYS[0], CHAIN, "a.example:7546").to_json(), "node_id": "zz"}
    with pytest.raises(CeremonyError, match="must be hex") as raised:
        card_from_json(doc, "x.card")
    assert not isinstance(raised.value, NotACardError)


def test_a_card_made_for_another_chain_is_refused_by_the_genesis_of_this_one():
    mixed = [*cards()[:3], ("late.card", make_card(KEYS[3], "other-net", "d.example:7546"))]
    with pytest.raises(CeremonyError, match=r"late\.card: the card was made for chain "
                                            r"'other-net', not 'ward-net'"):
        build_genesis(CHAIN, mixed, time_ms=1)


def test_two_cards_of_one_key_are_refused():
    twice = [*cards()[:2], ("again.card", make_card(KEYS[0], CHAIN, "elsewhere:7546"))]
    with pytest.raises(CeremonyError, match=r"again\.card and node0\.card are cards of the "
                                            r"same key"):
        build_genesis(CHAIN, twice, time_ms=1)


def test_two_cards_of_one_address_are_refused():
    same = [*cards()[:1], ("b.card", make_card(KEYS[1], CHAIN, "node0.hospital.example:7546"))]
    with pytest.raises(CeremonyError, match="same address"):
        build_genesis(CHAIN, same, time_ms=1)


@pytest.mark.parametrize("threshold", [0, 5])
def test_an_admission_threshold_out_of_range_is_refused(threshold):
    with pytest.raises(CeremonyError, match="admission threshold must be from 1 to 4"):
        build_genesis(CHAIN, cards(), time_ms=1, admission_threshold=threshold)


def test_the_genesis_is_the_same_whatever_the_order_of_the_cards():
    forward = build_genesis(CHAIN, cards(), time_ms=1)
    backward = build_genesis(CHAIN, cards()[::-1], time_ms=1)
    assert forward.hash == backward.hash
    assert set(forward.authorities) == {k.public for k in KEYS}
    assert forward.admission_threshold == 3  # a majority by default


@pytest.mark.parametrize("address", ["node0.example", "node0.example:0", "node0:99999",
                                     "0.0.0.0:7546", "[::]:7546", ":7546", "a b:7546"])
def test_an_address_peers_cannot_dial_is_refused(address):
    with pytest.raises(CeremonyError, match="address"):
        check_address(address)


@pytest.mark.parametrize("address, parsed", [("node0.example:7546", ("node0.example", 7546)),
                                             ("10.0.0.5:1", ("10.0.0.5", 1)),
                                             ("[fd00::5]:7546", ("fd00::5", 7546))])
def test_a_dialable_address_is_taken(address, parsed):
    assert check_address(address) == parsed


@pytest.mark.parametrize("address", [
    "node0\x00.example:7546",  # a control character no resolver takes
    "node0.example\u202e:7546",  # right-to-left override: shown as another address
    'node0"x.example:7546',  # a quote
    "n\u00f8de0.example:7546",  # not the ASCII (punycode) form of a name
    "[node0.example]:7546",  # brackets hold an IPv6 literal only
    "a..b:7546", "-x:7546", "999.1.1.1:7546",  # what the settings refuse too (hostport.py)
    "::1:7546",  # an IPv6 address without brackets
])
def test_an_address_with_characters_no_host_name_has_is_refused(address):
    """The card's address is read as every setting reads HOST:PORT (iomtnode/hostport.py),
    so `genesis verify --install` never writes an advertise_address the node then refuses."""
    with pytest.raises(CeremonyError, match=r"address must be HOST:PORT that other nodes can "
                                            r"dial .*: "):
        check_address(address)


def test_cards_checked_against_a_genesis_must_name_its_authorities():
    genesis = build_genesis(CHAIN, cards()[:3], time_ms=1)
    check_genesis_cards(genesis, cards()[:3])
    with pytest.raises(CeremonyError, match=r"node3\.card: the card's key .* is not an "
                                            r"authority"):
        check_genesis_cards(genesis, cards())


def test_a_node_advertises_its_own_card_and_dials_the_others():
    plan = placement(KEYS[1].public, [c for _, c in cards()])
    assert plan.advertise_address == "node1.hospital.example:7546"
    assert plan.bootnodes == ("node0.hospital.example:7546", "node2.hospital.example:7546",
                              "node3.hospital.example:7546")
