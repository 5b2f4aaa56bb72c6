"""Replayed peer records cost a lookup: a record verified once is not verified again; a
record that did not verify is not remembered; the memory is bounded."""

from __future__ import annotations

import pytest

from iomtnode.core.crypto import SigningKey, blake2b256
from iomtnode.p2p import records
from iomtnode.p2p.recordcache import RECORD_ENTRY_BYTES, VerifiedRecords
from iomtnode.p2p.records import RecordError, sign_record

CHAIN = "iomt-test"


def key(n: int) -> SigningKey:
    return SigningKey(blake2b256(n.to_bytes(4, "big")))


@pytest.fixture
def verifications(monkeypatch) -> list[bytes]:
    """The node ids whose record signatures were checked."""
    checked: list[bytes] = []
    real = records.verify

    def counting(node_id, *args):
        checked.append(node_id)
        return real(node_id, *args)

    monkeypatch.setattr(records, "verify", counting)
    return checked


def test_a_replayed_record_is_not_verified_again(verifications):
    cache = VerifiedRecords(CHAIN)
    record = sign_record(key(1), ("10.0.0.1:7000",), 1, 1000, CHAIN)
    assert cache.decode(record.raw) == record
    for _ in range(1000):
        assert cache.decode(bytes(record.raw)) == record  # the same bytes, a new object
    assert verifications == [key(1).public]
    assert cache.replays == 1000


def test_a_record_that_does_not_verify_is_refused_every_time(verifications):
    cache = VerifiedRecords("another-chain")
    record = sign_record(key(1), ("10.0.0.1:7000",), 1, 1000, CHAIN)
    for _ in range(3):
        with pytest.raises(RecordError, match="bad signature"):
            cache.decode(record.raw)
    assert len(cache) == 0 and len(verifications) == 3


def test_the_records_remembered_are_bounded_in_bytes():
    made = [sign_record(key(n), ("10.0.0.1:7000",), 1, 1000, CHAIN) for n in range(40)]
    per = len(made[0].raw) + RECORD_ENTRY_BYTES
    cache = VerifiedRecords(CHAIN, max_bytes=10 * per)
    for record in made:
        cache.decode(record.raw)
    assert len(cache) == 10
    assert cache.decode(made[-1].raw) and cache.replays == 1  # the latest are remembered
