"""Known-id sets bounded in bytes: the recent ids are remembered, never more than the bound
allows, and the memory they take stays within it (measured)."""

from __future__ import annotations

import tracemalloc

import pytest

from iomtnode.admission.gossip import KNOWN_ID_BYTES_PER_PEER
from iomtnode.core.crypto import blake2b256
from iomtnode.p2p.lru import ID_ENTRY_BYTES, IdSet


def ids(start: int, n: int) -> list[bytes]:
    return [blake2b256(i.to_bytes(8, "big")) for i in range(start, start + n)]


def test_the_recent_ids_are_remembered_and_no_more_than_the_capacity():
    known = IdSet(64 * ID_ENTRY_BYTES)
    assert known.capacity == 64
    made = ids(0, 1000)
    for n, item in enumerate(made):
        assert known.add(item)
        assert not known.add(item)  # already there
        assert len(known) <= 64
        assert all(x in known for x in made[max(0, n - 31):n + 1])  # the last half, always
    assert made[0] not in known
    known.discard(made[-1])
    assert made[-1] not in known and made[-2] in known


def test_a_bound_below_two_entries_is_refused():
    with pytest.raises(ValueError, match="at least"):
        IdSet(ID_ENTRY_BYTES)


@pytest.mark.parametrize("max_bytes", [256 * 1024, KNOWN_ID_BYTES_PER_PEER])
def test_its_memory_stays_within_the_bound(max_bytes):
    """Fresh ids (bytes not shared with anything else: the worst case), three times over."""
    stream = ids(0, 3 * max_bytes // ID_ENTRY_BYTES)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        known = IdSet(max_bytes)
        peak = 0
        for n, item in enumerate(stream):
            known.add(bytes(bytearray(item)))  # a copy only the set holds
            if n % 512 == 0:
                peak = max(peak, tracemalloc.get_traced_memory()[0] - base)
        peak = max(peak, tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()
    assert len(known) <= known.capacity
    assert peak <= max_bytes


def test_a_peers_known_ids_and_served_ids_are_bounded_in_bytes(autojump_clock):
    from iomtnode.admission.reconcile import SERVED_IDS_BYTES_PER_PEER, ServeGuard
    from tests.admission.fakes import gossiping

    known = gossiping(1).gossip.known_by(b"p" * 32)
    for item in ids(0, 3 * KNOWN_ID_BYTES_PER_PEER // ID_ENTRY_BYTES):
        known.add(item)
    assert len(known) <= KNOWN_ID_BYTES_PER_PEER // ID_ENTRY_BYTES
    guard = ServeGuard(0.0, rate_per_s=1e9, burst=1e9)
    many = ids(0, 3 * SERVED_IDS_BYTES_PER_PEER // ID_ENTRY_BYTES)
    guard.admit(many, set(many), lambda tx_id: True, 0.0)
    assert len(guard._served) <= SERVED_IDS_BYTES_PER_PEER // ID_ENTRY_BYTES
