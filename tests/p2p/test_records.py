"""Peer records and the address book: signatures, the higher seq wins, persistence."""

from __future__ import annotations

import random

import pytest

from iomtnode.core import codec
from iomtnode.core.crypto import Domain, SigningKey, blake2b256
from iomtnode.p2p.discovery import AddressBook, OwnRecord
from iomtnode.p2p.messages import PeerRecords, ProtocolError, decode_message, encode_message
from iomtnode.p2p.records import RecordError, decode_record, sign_record
from iomtnode.store import BlockStore

from ..core.helpers import longer_form

CHAIN = "iomt-test"
A = SigningKey(blake2b256(b"A"))
B = SigningKey(blake2b256(b"B"))


def test_round_trip_and_signature():
    record = sign_record(A, ("127.0.0.1:7000",), 3, 1234, CHAIN)
    again = decode_record(record.raw, CHAIN)
    assert again == record and again.node_id == A.public and again.seq == 3
    with pytest.raises(RecordError, match="bad signature"):
        decode_record(record.raw, "another-chain")


def test_a_record_cannot_be_rewritten_by_a_relay():
    record = sign_record(A, ("127.0.0.1:7000",), 3, 1234, CHAIN)
    _, signature = codec.decode(record.raw)
    forged_body = codec.encode([A.public, ["10.6.6.6:7000"], 99, 1234])
    with pytest.raises(RecordError, match="bad signature"):
        decode_record(codec.encode([forged_body, signature]), CHAIN)
    # B signing a record that names A is no better
    forged = codec.encode([forged_body,
                           B.sign(Domain.PEER_RECORD, CHAIN, blake2b256(forged_body))])
    with pytest.raises(RecordError):
        decode_record(forged, CHAIN)


def test_a_record_has_one_encoding():
    # a relay that re-packs a record, or a node that signs a non-canonical body, makes
    # bytes every node refuses: one record, one form, wherever it spreads
    record = sign_record(A, ("127.0.0.1:7000",), 3, 1234, CHAIN)
    with pytest.raises(RecordError, match="not canonical"):
        decode_record(longer_form(record.raw), CHAIN)
    body = longer_form(codec.encode([A.public, ["127.0.0.1:7000"], 3, 1234]))
    signed = codec.encode([body, A.sign(Domain.PEER_RECORD, CHAIN, blake2b256(body))])
    with pytest.raises(RecordError, match="not canonical"):
        decode_record(signed, CHAIN)
    assert decode_record(record.raw, CHAIN).raw == record.raw  # relayed as received


@pytest.mark.parametrize("raw", [b"", b"\x92\x01\x02", b"\xc4\x00", codec.encode([b"", b""])])
def test_garbage_is_a_record_error(raw):
    with pytest.raises(RecordError):
        decode_record(raw, CHAIN)


def test_higher_seq_wins_and_the_book_persists_with_tables(tmp_path):
    old = sign_record(A, ("127.0.0.1:7000",), 5, 1, CHAIN)
    new = sign_record(A, ("127.0.0.2:7001",), 6, 2, CHAIN)
    other = sign_record(B, ("10.0.0.2:7001",), 1, 2, CHAIN)
    with BlockStore.open(tmp_path / "db") as store:
        book = AddressBook(store, CHAIN, lambda: 10)
        assert book.update(old, 10, "10.0.0.0/24")
        assert book.update(new, 10, "10.0.0.0/24")
        assert not book.update(old, 10, "10.0.0.0/24")  # a lower seq never replaces a higher
        assert not book.update(new, 10, "10.0.0.0/24")  # nor does the same one
        assert book.records[A.public].addresses == ("127.0.0.2:7001",)
        assert book.update(other, 10, "10.0.1.0/24")
        book.answered(B.public, "10.0.0.2:7001")
        book.flush()
    with BlockStore.open(tmp_path / "db") as store:
        book = AddressBook(store, CHAIN, lambda: 10)
        assert book.records == {A.public: new, B.public: other}
        assert book.is_tried(B.public) and not book.is_tried(A.public)
        assert book.sample(1, random.Random(1)) == [other]  # those that answered go first


def test_a_book_written_as_a_plain_list_still_loads(tmp_path):
    record = sign_record(A, ("127.0.0.1:7000",), 5, 1, CHAIN)
    with BlockStore.open(tmp_path / "db") as store:
        store.put_meta("address_book", codec.encode([record.raw, b"garbage"]))
        book = AddressBook(store, CHAIN, lambda: 10)
        assert book.records == {A.public: record} and not book.is_tried(A.public)


@pytest.mark.parametrize("address", ["0.0.0.0:7001", "[::]:7001", "node1:0", "[::1:7001",
                                     "a..b:7001", "999.1.1.1:7001", "::1:7001", "x y:7001"])
def test_a_record_naming_an_address_no_node_can_dial_is_neither_kept_nor_loaded(tmp_path,
                                                                                address):
    """Signed by its node, so valid as a record, but not spread or dialed: the book keeps
    only addresses the settings would take as a dialable HOST:PORT (iomtnode/hostport.py)."""
    bad = sign_record(A, (address,), 5, 1, CHAIN)
    good = sign_record(B, ("node2.example:7001",), 1, 1, CHAIN)
    with BlockStore.open(tmp_path / "db") as store:
        book = AddressBook(store, CHAIN, lambda: 10)
        assert not book.update(bad, 10, "10.0.0.0/24")
        assert book.update(good, 10, "10.0.0.0/24")
        assert book.records == {B.public: good}
        store.put_meta("address_book", codec.encode([bad.raw, good.raw]))  # an older book
        assert AddressBook(store, CHAIN, lambda: 10).records == {B.public: good}


def test_own_record_seq_is_bumped_on_every_publish_and_survives_restarts(tmp_path):
    with BlockStore.open(tmp_path / "db") as store:
        own = OwnRecord(A, CHAIN, store, now_ms=lambda: 7)
        assert own.publish("127.0.0.1:1").seq == 1
        assert own.publish("127.0.0.3:2").seq == 2
    with BlockStore.open(tmp_path / "db") as store:
        own = OwnRecord(A, CHAIN, store, now_ms=lambda: 8)
        record = own.publish("127.0.0.1:1")
        assert record.seq == 3 and decode_record(record.raw, CHAIN) == record


def test_records_travel_in_messages():
    record = sign_record(A, ("127.0.0.1:7000",), 1, 1, CHAIN)
    msg = decode_message(encode_message(PeerRecords([record.raw])))
    assert msg == PeerRecords([record.raw])
    with pytest.raises(ProtocolError):
        decode_message(encode_message(PeerRecords([record.raw] * 65)))
