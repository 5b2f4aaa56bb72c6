"""The stream indices a commit writes, and the chain's queries over them: a stream's readings
by time with a cursor, a grantee's wraps, a stream's metadata, blobs by commitment."""

from __future__ import annotations

import pytest

from iomtnode.chain.chain import Chain
from iomtnode.chain.records import MAX_STREAM_READINGS
from iomtnode.chain.streamstore import BlobError
from iomtnode.core.fields import U64_MAX
from iomtnode.core.payload import commitment
from iomtnode.core.tx import HISTORY
from iomtnode.store import BlockStore

from ..chain.streamkit import (
    GENESIS,
    STREAM,
    T0,
    blob_for,
    blob_reading,
    epoch,
    grant,
    reading,
    revoke,
    seal,
    stream_chain,
)
from ..core.helpers import pub

EVERYTHING = (0, U64_MAX)


def cursor(found) -> bytes:
    last = found[-1].tx
    return last.body.ts_ms.to_bytes(8, "big") + last.id


@pytest.fixture
def chain(tmp_path):
    chain = stream_chain(tmp_path / "data")
    yield chain
    chain.store.close()


def test_readings_come_back_by_timestamp_with_their_sidecars_and_heights(chain):
    late, early = reading("d1", 1, T0 + 500), reading("d2", 1, T0 + 100)
    seal(chain, [late, early])
    middle = reading("d1", 2, T0 + 300)
    seal(chain, [middle])
    found = chain.stream_readings(STREAM.public, *EVERYTHING, b"", 100)
    assert [r.tx.id for r in found] == [early.id, middle.id, late.id]
    assert [r.tx.raw for r in found] == [early.raw, middle.raw, late.raw]  # sidecars held
    assert [r.height for r in found] == [3, 4, 3]
    assert all(r.erased_by == b"" and not r.blob for r in found)
    assert chain.stream_readings(pub("X"), *EVERYTHING, b"", 100) == []  # another stream


def test_equal_timestamps_are_ordered_by_tx_id_and_the_range_is_half_open(chain):
    same = [reading("d1", 1, T0 + 200), reading("d2", 1, T0 + 200)]
    seal(chain, [*same, reading("d1", 2, T0 + 100), reading("d2", 2, T0 + 300)])
    found = chain.stream_readings(STREAM.public, T0 + 200, T0 + 300, b"", 100)
    assert [r.tx.id for r in found] == sorted(tx.id for tx in same)
    assert chain.stream_readings(STREAM.public, T0 + 300, T0 + 301, b"", 100)[0].tx.body.seq == 2
    assert chain.stream_readings(STREAM.public, T0 + 301, T0 + 300, b"", 100) == []


def test_a_cursor_pages_through_every_reading_once(chain):
    txs = [reading(d, seq, T0 + 10 * seq + (d == "d2")) for seq in range(1, 8)
           for d in ("d1", "d2")]
    seal(chain, txs[:6])
    seal(chain, txs[6:])
    seen, after = [], b""
    while page := chain.stream_readings(STREAM.public, *EVERYTHING, after, 3):
        assert len(page) <= 3
        seen += [r.tx.id for r in page]
        after = cursor(page)
    assert seen == [tx.id for tx in sorted(txs, key=lambda t: (t.body.ts_ms, t.id))]
    with pytest.raises(ValueError, match="cursor"):
        chain.stream_readings(STREAM.public, *EVERYTHING, b"short", 3)


def test_the_limit_is_capped(chain, monkeypatch):
    monkeypatch.setattr("iomtnode.chain.records.MAX_STREAM_READINGS", 2)
    seal(chain, [reading("d1", s, T0 + s) for s in range(1, 5)])
    assert len(chain.stream_readings(STREAM.public, *EVERYTHING, b"", 10**9)) == 2
    assert MAX_STREAM_READINGS >= 100


def test_the_index_survives_a_reopen_and_a_staged_range(tmp_path):
    chain = stream_chain(tmp_path / "data")
    staged = chain.staged()
    seal(staged, [reading("d1", 1, T0 + 1)])
    seal(staged, [reading("d1", 2, T0 + 2)])
    staged.store.flush()
    chain.adopt(staged)
    chain.store.close()
    chain = Chain(BlockStore.open(tmp_path / "data"), GENESIS)
    try:
        found = chain.stream_readings(STREAM.public, *EVERYTHING, b"", 10)
        assert [r.tx.body.seq for r in found] == [1, 2]
        assert [r.height for r in found] == [3, 4]
    finally:
        chain.store.close()


def test_a_grantee_gets_its_grant_wrap_and_each_later_epoch_wrap(chain):
    seal(chain, [grant("G", mode=HISTORY), grant("H", nonce=2)])
    seal(chain, [epoch(["G", "H"], 2)])
    seal(chain, [revoke("H", ["G"], 3)])
    wraps = chain.stream_wraps(STREAM.public, pub("G"))
    assert [(w.epoch, w.mode) for w in wraps] == [(1, HISTORY), (2, HISTORY), (3, HISTORY)]
    assert wraps[0].wrap == grant("G", mode=HISTORY).sidecar
    assert wraps[1].wrap == b"epoch wrap G" + (2).to_bytes(8, "big")
    assert [w.epoch for w in chain.stream_wraps(STREAM.public, pub("H"))] == [1, 2]  # not 3
    assert chain.stream_wraps(STREAM.public, pub("X")) == []


def test_the_stream_view_names_the_current_epoch_its_grants_and_announcement(chain):
    view = chain.stream_view(STREAM.public)
    assert view is not None and view.epoch == 1 and not view.erased and view.grants == {}
    assert view.announcement is not None and view.announcement.sidecar  # with its wraps
    seal(chain, [grant("G"), grant("H", nonce=2)])
    revocation = revoke("H", ["G"], 2)
    seal(chain, [revocation])
    view = chain.stream_view(STREAM.public)
    assert view.epoch == 2 and list(view.grants) == [pub("G")]
    assert view.grants[pub("G")].first_epoch == 1
    assert view.announcement is not None and view.announcement.id == revocation.id
    assert chain.stream_view(pub("X")) is None


def test_an_uploaded_blob_becomes_permanent_when_its_reading_commits(chain):
    blob = blob_for("d1", 1, 2)
    address = chain.put_blob(blob, T0)
    assert address == commitment(blob) and chain.holds_blob(address)
    assert chain.blob(address) is None and chain.blob_owner(address) is None  # pending only
    seal(chain, [blob_reading("d1", 1, T0 + 5, blob, 2)])
    assert chain.blob(address) == blob and chain.blob_owner(address) == (STREAM.public, 1)
    assert chain.store.sidecars.pending_blob(address) is None
    assert chain.missing_blobs(10) == []
    found = chain.stream_readings(STREAM.public, *EVERYTHING, b"", 10)
    assert found[0].blob and found[0].tx.sidecar == b""


def test_a_reading_committed_without_its_blob_is_marked_missing(chain):
    blob = blob_for("d1", 1)
    seal(chain, [blob_reading("d1", 1, T0 + 5, blob)])
    assert chain.missing_blobs(10) == [(commitment(blob), STREAM.public)]
    assert not chain.stream_readings(STREAM.public, *EVERYTHING, b"", 10)[0].blob
    assert not chain.put_fetched_blob(blob_for("d1", 2))  # no reading names it
    assert chain.put_fetched_blob(blob)
    assert chain.blob(commitment(blob)) == blob and chain.missing_blobs(10) == []


def test_uploads_are_checked_for_size_and_bounded(chain, monkeypatch):
    with pytest.raises(BlobError, match="size class 1 or 2"):
        chain.put_blob(b"x" * 100, T0)
    monkeypatch.setattr("iomtnode.store.sidecars.BLOB_PENDING_BYTES", 2 * len(blob_for("d1", 1)))
    chain.put_blob(blob_for("d1", 1), T0)
    chain.put_blob(blob_for("d1", 2), T0)
    with pytest.raises(BlobError, match="wait for their readings"):
        chain.put_blob(blob_for("d1", 3), T0)
    chain.put_blob(blob_for("d1", 3), T0 + 600_000)  # the first two expired
    assert not chain.holds_blob(commitment(blob_for("d1", 1)))
    assert chain.holds_blob(commitment(blob_for("d1", 3)))


def test_a_claimed_upload_does_not_expire_until_every_claim_is_given_back(chain):
    """A reading naming it is pending in the mempool (accepted): it waits as long as the
    reading does, by an upload's sweep or a commit's."""
    sidecars = chain.store.sidecars
    kept, other = blob_for("d1", 1), blob_for("d1", 2)
    chain.put_blob(kept, T0)
    chain.put_blob(other, T0)
    sidecars.claim([commitment(kept), commitment(kept)])  # two pending readings name it
    chain.put_blob(blob_for("d1", 3), T0 + 600_000)  # the sweep of an upload
    assert chain.holds_blob(commitment(kept)) and not chain.holds_blob(commitment(other))
    sidecars.release([commitment(kept)])
    assert sidecars.expire_pending(T0 + 600_000) == 0  # one claim left
    assert chain.holds_blob(commitment(kept))
    sidecars.release([commitment(kept)])
    assert sidecars.expire_pending(T0 + 600_000) == 1
    assert not chain.holds_blob(commitment(kept))


def test_pending_blobs_are_remembered_across_a_restart(tmp_path):
    chain = stream_chain(tmp_path / "data")
    blob = blob_for("d1", 1)
    chain.put_blob(blob, T0)
    chain.store.close()
    chain = Chain(BlockStore.open(tmp_path / "data"), GENESIS)
    try:
        assert chain.holds_blob(commitment(blob))
        seal(chain, [blob_reading("d1", 1, T0 + 5, blob)])
        assert chain.blob(commitment(blob)) == blob
    finally:
        chain.store.close()
