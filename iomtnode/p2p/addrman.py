"""The address book's tables, after Bitcoin Core's addrman; pure (the caller passes ``now``).

Records a peer told us of go to the **new** table, into a bucket chosen by a keyed hash of the
teller's netgroup and the record's netgroup: the peers of one netgroup can fill at most
:data:`NEW_BUCKETS_PER_SOURCE` buckets, :data:`BUCKET_SIZE` records each, however many keys
and records they make, and they cannot aim at the buckets honest sources use (the key is this
node's secret). A record whose node answered a dial of ours as that node moves to the
**tried** table, bucketed by its own netgroup, so one /24 holds at most
:data:`TRIED_BUCKETS_PER_GROUP` tried buckets.

A full new bucket takes a newcomer only in place of a record that failed a dial, or one
older than :data:`NEW_STALE_MS`; a full tried bucket sends its least recently good record
back to the new table. Records of the new table that fail :data:`MAX_FAILED_DIALS` dials in a
row are forgotten. Eviction never looks at a record's own time stamp (its author picks it);
records stamped more than :data:`MAX_RECORD_FUTURE_MS` ahead are refused outright.

A record of the new table whose node was a peer of ours (it held a live connection, so it
proved its key; typically it dialed us, as nodes dial their bootnode) is marked ``peer`` until
a dial of it fails: :meth:`AddrMan.pick_new` draws those first, so a restarted node dials its
peers of before first among never-answered records, at the same pace. Such a record stays in
the new table: a connection proves a key, not the address its record names.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from ..core.crypto import blake2b256
from .records import PeerRecord
from .slots import netgroup

NEW_BUCKETS = 64
TRIED_BUCKETS = 16
BUCKET_SIZE = 16  # records per bucket: the new table holds 1,024, the tried table 256
NEW_BUCKETS_PER_SOURCE = 4  # new buckets one source netgroup can fill (64 records)
TRIED_BUCKETS_PER_GROUP = 4  # tried buckets the records of one netgroup can fill (64 records)
MAX_FAILED_DIALS = 5  # a record never answered is forgotten after this many failed dials
NEW_STALE_MS = 30 * 86_400_000  # a new record this old may be replaced in a full bucket
MAX_RECORD_FUTURE_MS = 600_000  # a record stamped further ahead than this (clock skew) is refused


@dataclass(slots=True)
class Entry:
    """One record in the book and what this node knows of it."""

    record: PeerRecord
    source: str  # netgroup of the peer that told us ("" when loaded without one)
    added_ms: int  # when this node learned it (this node's clock, not the record's)
    tried: bool = False  # its node answered a dial of ours as itself
    failed: int = 0  # dials failed since the last success
    good_ms: int = 0  # when it last answered
    bucket: int = 0  # in its table
    peer: bool = False  # its node was a peer of ours, and no dial of it failed since


def record_group(record: PeerRecord) -> str:
    """The netgroup of the address a record's node is dialed at."""
    host = record.addresses[0].rsplit(":", 1)[0]
    return netgroup(host)


class AddrMan:
    """The new and tried tables (module doc). ``key`` is this node's secret bucket key."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._entries: dict[bytes, Entry] = {}
        self._buckets: dict[tuple[bool, int], dict[bytes, None]] = {}  # (tried, n) -> ids

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._entries

    def entries(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def get(self, node_id: bytes) -> Entry | None:
        return self._entries.get(node_id)

    def _hash(self, *parts: str | bytes) -> int:
        data = b"|".join(p.encode() if isinstance(p, str) else p for p in parts)
        return int.from_bytes(blake2b256(self._key + data)[:8], "big")

    def new_bucket(self, source: str, group: str) -> int:
        slot = self._hash(b"new-slot", group, source) % NEW_BUCKETS_PER_SOURCE
        return self._hash(b"new", source, str(slot)) % NEW_BUCKETS

    def tried_bucket(self, node_id: bytes, group: str) -> int:
        slot = self._hash(b"tried-slot", node_id) % TRIED_BUCKETS_PER_GROUP
        return self._hash(b"tried", group, str(slot)) % TRIED_BUCKETS

    def add(self, record: PeerRecord, source: str, now_ms: int) -> bool:
        """Keep ``record`` (told by a peer of netgroup ``source``) if it is new or newer than
        the one held; True if the book changed. A newer record of a known node replaces the
        old one where it is (its node signed both: it moved)."""
        if record.time_ms > now_ms + MAX_RECORD_FUTURE_MS:
            return False
        held = self._entries.get(record.node_id)
        if held is not None:
            if not record.newer_than(held.record):
                return False
            held.record = record
            return True
        entry = Entry(record, source, now_ms)
        entry.bucket = self.new_bucket(source, record_group(record))
        return self._place(entry, now_ms)

    def _place(self, entry: Entry, now_ms: int) -> bool:
        """Put a new-table entry in its bucket, making room if a record there may go."""
        bucket = self._buckets.setdefault((False, entry.bucket), {})
        if len(bucket) >= BUCKET_SIZE:
            worst = max((self._entries[n] for n in bucket),
                        key=lambda e: (e.failed, now_ms - e.added_ms))
            if worst.failed == 0 and now_ms - worst.added_ms < NEW_STALE_MS:
                return False  # every record there is as good as the newcomer: keep them
            self.remove(worst.record.node_id)
        bucket[entry.record.node_id] = None
        self._entries[entry.record.node_id] = entry
        return True

    def remove(self, node_id: bytes) -> bool:
        entry = self._entries.pop(node_id, None)
        if entry is None:
            return False
        bucket = self._buckets[(entry.tried, entry.bucket)]
        del bucket[node_id]
        if not bucket:
            del self._buckets[(entry.tried, entry.bucket)]
        return True

    def mark_tried(self, node_id: bytes, now_ms: int) -> None:
        """The node answered a dial as itself: its record moves to the tried table; a full
        tried bucket sends its least recently good record back to the new table."""
        entry = self._entries.get(node_id)
        if entry is None:
            return
        entry.failed, entry.good_ms = 0, now_ms
        if entry.tried:
            return
        self.remove(node_id)
        entry.tried, entry.bucket = True, self.tried_bucket(node_id, record_group(entry.record))
        bucket = self._buckets.setdefault((True, entry.bucket), {})
        if len(bucket) >= BUCKET_SIZE:
            oldest = min((self._entries[n] for n in bucket), key=lambda e: e.good_ms)
            self.remove(oldest.record.node_id)
            oldest.tried = False
            oldest.bucket = self.new_bucket(oldest.source, record_group(oldest.record))
            self._place(oldest, now_ms)
            bucket = self._buckets.setdefault((True, entry.bucket), {})
        bucket[node_id] = None
        self._entries[node_id] = entry

    def mark_failed(self, node_id: bytes) -> None:
        """A dial of the node failed (unreachable, timed out, refused); a record never answered
        is forgotten after :data:`MAX_FAILED_DIALS` in a row."""
        entry = self._entries.get(node_id)
        if entry is None:
            return
        entry.failed += 1
        entry.peer = False
        if not entry.tried and entry.failed >= MAX_FAILED_DIALS:
            self.remove(node_id)

    def mark_peer(self, node_id: bytes) -> bool:
        """The node holds a live connection with us (either way): its record, if held, is
        drawn first among new ones until a dial of it fails. True if that changed."""
        entry = self._entries.get(node_id)
        if entry is None or entry.peer:
            return False
        entry.peer = True
        return True

    def pick_new(self, rng: random.Random, skip: set[bytes]) -> PeerRecord | None:
        """A record of the new table not in ``skip``: a random bucket, then a random record
        in it (so each source netgroup's share of the dials is its share of buckets); the
        records of peers of before (``peer``) first, by the same draw."""
        buckets = [ids for (tried, _), ids in self._buckets.items() if not tried]
        rng.shuffle(buckets)
        for peers_only in (True, False):
            for ids in buckets:
                choices = [n for n in ids
                           if n not in skip and (self._entries[n].peer or not peers_only)]
                if choices:
                    return self._entries[rng.choice(choices)].record
        return None
