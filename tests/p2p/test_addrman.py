"""The address book's tables (pure): bucketed by the source that told us, so one source
cannot fill the book; records stamped ahead refused; never-answered records evicted first;
tried records kept apart."""

from __future__ import annotations

import random

from iomtnode.core.crypto import SigningKey, blake2b256
from iomtnode.p2p import addrman
from iomtnode.p2p.addrman import AddrMan, record_group
from iomtnode.p2p.records import PeerRecord, sign_record

CHAIN = "iomt-test"
NOW = 10**12


def record(name: str, address: str, seq: int = 1, time_ms: int = NOW) -> PeerRecord:
    return sign_record(SigningKey(blake2b256(name.encode())), (address,), seq, time_ms, CHAIN)


HONEST = [record(f"h{i}", f"10.{i}.0.1:7546") for i in range(40)]


def honest_book() -> AddrMan:
    book = AddrMan(b"k" * 32)
    for i, r in enumerate(HONEST):  # each told by a peer of its own netgroup
        assert book.add(r, f"10.{i}.0.0/24", NOW)
    return book


def test_one_source_cannot_fill_the_book_or_push_out_honest_records():
    book = honest_book()
    flood = [record(f"junk{i}", f"66.6.{i % 256}.{i // 256}:1") for i in range(2000)]
    kept = sum(book.add(r, "66.6.6.0/24", NOW) for r in flood)
    cap = addrman.NEW_BUCKETS_PER_SOURCE * addrman.BUCKET_SIZE
    assert kept <= cap  # one source netgroup: at most its few buckets
    assert all(r.node_id in book for r in HONEST)  # nobody honest was evicted
    assert len(book) <= len(HONEST) + cap


def test_records_stamped_ahead_are_refused_and_gain_nothing():
    book = AddrMan(b"k" * 32)
    skew = addrman.MAX_RECORD_FUTURE_MS
    assert not book.add(record("ahead", "10.0.0.1:1", time_ms=NOW + skew + 1), "s", NOW)
    assert book.add(record("edge", "10.0.0.2:1", time_ms=NOW + skew), "s", NOW)
    entry = book.get(record("edge", "10.0.0.2:1").node_id)
    assert entry is not None and entry.added_ms == NOW  # our clock, not the record's


def fill_bucket(book: AddrMan, source: str) -> list[PeerRecord]:
    """Records from ``source`` until one bucket of it is full; the records in that bucket."""
    by_bucket: dict[int, list[PeerRecord]] = {}
    for i in range(10_000):
        r = record(f"{source}-{i}", f"10.{i % 200}.{i // 200}.1:1")
        bucket = book.new_bucket(source, record_group(r))
        by_bucket.setdefault(bucket, []).append(r)
        if len(by_bucket[bucket]) == addrman.BUCKET_SIZE:
            for r in by_bucket[bucket]:
                assert book.add(r, source, NOW)
            return by_bucket[bucket]
    raise AssertionError("no bucket filled")


def test_a_full_bucket_evicts_only_a_record_that_failed_a_dial():
    book = AddrMan(b"k" * 32)
    full = fill_bucket(book, "10.9.9.0/24")
    bucket = book.new_bucket("10.9.9.0/24", record_group(full[0]))
    newcomer = next(r for i in range(10_000)
                    if book.new_bucket("10.9.9.0/24",
                                       record_group(r := record(f"n{i}", f"10.{i % 200}.7.1:1")))
                    == bucket)
    assert not book.add(newcomer, "10.9.9.0/24", NOW)  # all as good as it: it waits
    book.mark_failed(full[3].node_id)
    assert book.add(newcomer, "10.9.9.0/24", NOW)  # the one never answered, that failed, goes
    assert full[3].node_id not in book and full[0].node_id in book


def test_records_never_answered_are_forgotten_after_failed_dials_tried_ones_are_not():
    book = honest_book()
    never, answered = HONEST[0], HONEST[1]
    book.mark_tried(answered.node_id, NOW)
    for _ in range(addrman.MAX_FAILED_DIALS):
        book.mark_failed(never.node_id)
        book.mark_failed(answered.node_id)
    assert never.node_id not in book
    assert answered.node_id in book and book.get(answered.node_id).tried


def test_the_tried_table_holds_a_netgroup_to_a_few_buckets():
    book = AddrMan(b"k" * 32)
    same_group = [record(f"t{i}", f"66.6.6.{i}:1") for i in range(200)]
    for r in same_group:
        book.add(r, f"10.{r.node_id[0]}.0.0/24", NOW)
        book.mark_tried(r.node_id, NOW)
    tried = [e for e in book.entries() if e.tried]
    assert len(tried) <= addrman.TRIED_BUCKETS_PER_GROUP * addrman.BUCKET_SIZE
    assert len({e.bucket for e in tried}) <= addrman.TRIED_BUCKETS_PER_GROUP


def test_a_newer_record_of_a_known_node_replaces_it_in_place():
    book = honest_book()
    moved = record("h0", "10.99.0.1:7546", seq=2)
    assert book.add(moved, "66.6.6.0/24", NOW)
    entry = book.get(moved.node_id)
    assert entry.record == moved and entry.source == "10.0.0.0/24"  # the first teller stays


def test_picking_a_new_record_skips_those_asked_to():
    book = honest_book()
    rng = random.Random(7)
    skip = {r.node_id for r in HONEST[1:]}
    assert book.pick_new(rng, skip) == HONEST[0]
    assert book.pick_new(rng, skip | {HONEST[0].node_id}) is None


def test_host_names_hold_no_more_of_the_tried_table_than_one_netgroup():
    """Records naming host names (any number of which can point at one attacker's address)
    all count as one netgroup: once answered, they hold at most that group's tried buckets,
    not the whole tried table."""
    book = AddrMan(b"k" * 32)
    names = [record(f"name{i}", f"n{i}.evil.example:7546") for i in range(400)]
    for i, r in enumerate(names):  # told by many sources (each a peer of them, dialed)
        if book.add(r, f"66.{i % 250}.0.0/24", NOW):
            book.mark_tried(r.node_id, NOW)
    tried = [e for e in book.entries() if e.tried]
    assert len(tried) <= addrman.TRIED_BUCKETS_PER_GROUP * addrman.BUCKET_SIZE


def test_the_records_of_peers_of_before_are_drawn_first_until_a_dial_of_them_fails():
    # a restarted bootnode held its peers (they had dialed it) as never answered, drawn at
    # random among junk at one dial a second: its peers came back after 0 to 30 s
    book = honest_book()
    junk = [record(f"junk{i}", f"66.{i}.0.1:1") for i in range(64)]
    for i, r in enumerate(junk):
        book.add(r, f"77.{i % 16}.0.0/24", NOW)  # 16 sources: many buckets
    peers = HONEST[5], HONEST[30]
    for r in peers:
        assert book.mark_peer(r.node_id) and not book.mark_peer(r.node_id)
    rng, drawn = random.Random(1), set()
    for _ in range(3):
        drawn.add(book.pick_new(rng, drawn).node_id)
        if len(drawn) == 2:
            assert drawn == {p.node_id for p in peers}  # the peers, then the rest
    assert len(drawn) == 3
    book.mark_failed(peers[0].node_id)  # gone from its address: an ordinary record again
    assert not book.get(peers[0].node_id).peer and book.get(peers[1].node_id).peer
    assert not book.mark_peer(record("unknown", "10.0.0.9:1").node_id)  # no record: nothing
