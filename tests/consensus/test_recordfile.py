"""The record file: one synced write per record, no rename; a torn write leaves the previous
record; a file of the older format is read and rewritten crash-safely; a damaged one is
refused where a node would trust it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iomtnode.consensus import recordfile
from iomtnode.consensus.held import HeldBlocks
from iomtnode.consensus.recordfile import (
    HEADER,
    MIN_CAPACITY_BYTES,
    RecordFile,
    RecordFileError,
    encode_slot,
)
from iomtnode.consensus.signing import Signer, SigningStateError, SigningStateFile
from iomtnode.consensus.votes import SigningState, Step
from iomtnode.core.crypto import SigningKey, blake2b256
from iomtnode.store.files import temporary_of

KEY = SigningKey(blake2b256(b"A"))


class Syscalls:
    """Counts, per name, the calls of ``os`` functions that write or sync."""

    NAMES = ("fsync", "fdatasync", "replace", "rename", "pwrite", "write")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for name in self.NAMES:
            real = getattr(os, name)

            def spy(*args: object, real=real, name=name) -> object:
                self.calls.append(name)
                return real(*args)

            monkeypatch.setattr(os, name, spy)


def reopened(path: Path) -> bytes | None:
    with RecordFile.open(path) as again:
        return again.payload


def test_each_record_after_the_first_is_one_pwrite_and_one_fdatasync(tmp_path, monkeypatch):
    path = tmp_path / "rec"
    record = RecordFile.open(path)
    assert record.payload is None
    record.write(b"first")  # the file is made: written, fsynced, renamed, directory fsynced
    spy = Syscalls(monkeypatch)
    for i in range(5):
        record.write(b"record %d" % i)
        assert reopened(path) == b"record %d" % i
    assert spy.calls == ["pwrite", "fdatasync"] * 5
    assert path.stat().st_size == 2 * MIN_CAPACITY_BYTES
    assert path.stat().st_mode & 0o077 == 0
    assert not temporary_of(path).exists()


def test_a_record_larger_than_the_slots_makes_the_file_anew_with_larger_slots(tmp_path):
    path = tmp_path / "rec"
    record = RecordFile.open(path)
    record.write(b"small")
    big = os.urandom(3 * MIN_CAPACITY_BYTES)
    record.write(big)
    assert record.capacity >= HEADER.size + len(big)
    assert reopened(path) == big
    record.write(b"small again")  # into the larger slots, in place
    assert record.capacity >= HEADER.size + len(big)
    assert reopened(path) == b"small again"


@pytest.mark.parametrize("reopen", [False, True])
def test_nothing_older_than_the_two_newest_records_stays_in_the_file(tmp_path, reopen):
    """A block's payloads may be erased later: a shorter record zeroes the tail of the
    longer one its slot held (also in a file opened again)."""
    path = tmp_path / "rec"
    record = RecordFile.open(path)
    secrets = [os.urandom(64) for _ in range(2)]
    record.write(secrets[0] * 40)  # the file is made with slots for it
    record.write(secrets[1] * 40)
    if reopen:
        record.close()
        record = RecordFile.open(path)
    record.write(b"short")
    record.write(b"short again")
    raw = path.read_bytes()
    assert not any(secret in raw for secret in secrets)
    assert reopened(path) == b"short again"


@pytest.mark.parametrize("torn", ["nothing", "header", "half", "all_but_last_byte",
                                  "flipped_byte"])
def test_a_torn_write_leaves_the_previous_record(tmp_path, torn):
    """A crash in the middle of the third write: its slot holds some of the new bytes over
    the first record's; reading back finds the second, whole, record."""
    path = tmp_path / "rec"
    record = RecordFile.open(path)
    record.write(b"one" * 100)
    record.write(b"two" * 100)
    new = encode_slot(record.capacity, 3, b"three" * 100)
    part = {"nothing": b"", "header": new[:HEADER.size], "half": new[:len(new) // 2],
            "all_but_last_byte": new[:-1],
            "flipped_byte": new[:-1] + bytes([new[-1] ^ 1])}[torn]
    with open(path, "r+b") as f:  # slot 0 held "one": the third write goes there
        f.write(part)
    assert reopened(path) == b"two" * 100
    again = RecordFile.open(path)
    again.write(b"four")  # into the torn slot, never over the whole record
    assert reopened(path) == b"four"
    again.close()


def test_a_file_cut_short_in_its_second_slot_keeps_the_first(tmp_path):
    path = tmp_path / "rec"
    record = RecordFile.open(path)
    record.write(b"one")
    record.write(b"two")  # slot 1
    with open(path, "r+b") as f:
        f.truncate(MIN_CAPACITY_BYTES + HEADER.size // 2)
    assert reopened(path) == b"one"


def test_a_file_with_no_whole_record_is_refused(tmp_path):
    path = tmp_path / "rec"
    with RecordFile.open(path) as record:
        record.write(b"one")
        record.write(b"two")
    raw = bytearray(path.read_bytes())
    raw[HEADER.size] ^= 1  # slot 0's payload
    raw[MIN_CAPACITY_BYTES + HEADER.size] ^= 1  # slot 1's
    path.write_bytes(bytes(raw))
    with pytest.raises(RecordFileError):
        RecordFile.open(path)


def test_a_signing_state_file_with_no_whole_record_is_refused_not_taken_as_lost(tmp_path):
    """A damaged file must not read as "no signing state" (which would let the key sign
    again after a grace period): the signer refuses to start."""
    path = tmp_path / "signing_state"
    store = SigningStateFile(path)
    Signer(KEY, "iomt-test", store).record(SigningState(3, 0, Step.PREVOTE, b"\x01" * 32))
    store.close()
    raw = bytearray(path.read_bytes())
    raw[HEADER.size] ^= 1
    raw[MIN_CAPACITY_BYTES + HEADER.size] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(SigningStateError):
        Signer(KEY, "iomt-test", SigningStateFile(path))


def test_a_damaged_write_ahead_file_is_ignored_and_replaced(tmp_path):
    path = tmp_path / "consensus_wal"
    path.write_bytes(recordfile.MAGIC + b"\x00" * (2 * MIN_CAPACITY_BYTES - 8))
    wal = SigningStateFile(path)
    held = HeldBlocks(wal)  # logged, ignored: only a restart's liveness is at stake
    assert held.height == 0
    wal.put_meta("consensus_wal", b"record")
    assert reopened(path) == b"record"


def test_a_signing_state_of_the_older_format_is_read_and_migrated(tmp_path):
    """A home from before this format: its ``signing_state`` is the record alone. The first
    start reads it and rewrites the file in this format; the next write is one synced
    write."""
    path = tmp_path / "signing_state"
    state = SigningState(7, 1, Step.PRECOMMIT, b"\x05" * 32)
    from iomtnode.consensus.signing import signing_record
    path.write_bytes(signing_record(KEY.public, state))  # as the older version wrote it
    path.chmod(0o600)
    signer = Signer(KEY, "iomt-test", SigningStateFile(path))
    assert signer.state == state and not signer.fresh
    assert recordfile.is_record_file(path.read_bytes())
    assert Signer(KEY, "iomt-test", SigningStateFile(path)).state == state
    signer.record(SigningState(8, 0, Step.PREVOTE, b"\x06" * 32))
    assert Signer(KEY, "iomt-test", SigningStateFile(path)).state.height == 8


@pytest.mark.parametrize("crash_at", ["fsync", "replace", "directory_fsync"])
def test_a_crash_at_any_step_of_the_migration_leaves_the_record_readable(
        tmp_path, monkeypatch, crash_at):
    """The migration writes a new file beside the old one and renames it over: stopped
    before the rename, the old file is whole; after it, the new one is. Either way the
    next open reads the same record (and finishes the migration)."""
    path = tmp_path / "consensus_wal"
    old = b"\x93\x01\x05\x90"  # an older-format record ([1, 5, []])
    path.write_bytes(old)
    real_fsync, real_replace = os.fsync, os.replace
    fsyncs = 0

    class Crash(Exception):
        pass

    def fsync(fd: int) -> None:
        nonlocal fsyncs
        fsyncs += 1
        if (crash_at, fsyncs) in (("fsync", 1), ("directory_fsync", 2)):
            raise Crash
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        if crash_at == "replace":
            raise Crash
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Crash):
        RecordFile.open(path)
    monkeypatch.undo()
    assert recordfile.is_record_file(path.read_bytes()) is (crash_at == "directory_fsync")
    with RecordFile.open(path) as record:
        assert record.payload == old
    assert recordfile.is_record_file(path.read_bytes())
    assert reopened(path) == old


def test_an_empty_file_of_the_older_format_is_no_record(tmp_path):
    path = tmp_path / "signing_state"
    path.write_bytes(b"")
    assert Signer(KEY, "iomt-test", SigningStateFile(path)).fresh


def test_a_temporary_file_left_by_a_crash_is_removed_when_the_record_is_opened(tmp_path):
    """It may hold a record (blocks of the write-ahead record, say) that an erasure later
    removes from the file itself: it must not linger beside it."""
    path = tmp_path / "rec"
    RecordFile.open(path).write(b"kept")
    temporary_of(path).write_bytes(b"a replacement the crash cut short")
    assert RecordFile.open(path).payload == b"kept"
    assert not temporary_of(path).exists()
