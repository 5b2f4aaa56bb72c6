"""A durable record in one file: each new record costs one synced write and no rename.

A node's consensus records (the signing state, the write-ahead record) are replaced many
times a second, each before a signature, so each replacement is on consensus's critical
path. Replacing a file (write a temporary file, fsync it, rename it, fsync the directory)
costs two fsyncs; :class:`RecordFile` costs one ``fdatasync``.

Layout: the file holds two slots of :attr:`RecordFile.capacity` bytes each (a multiple
of :data:`PAGE_BYTES`, so a write to one slot never touches a disk sector of the other);
a slot is a header, ``MAGIC | capacity (u32) | sequence (u64) | length (u32) |
blake2b-256`` of the capacity, sequence, length and payload, then the payload. The
newest record is the slot with the higher sequence whose checksum holds. A new record
goes into the *other* slot with the next sequence number (``os.pwrite`` then
``os.fdatasync`` on the file, opened once and kept open). The file's blocks are all
written when it is made (zeros), so an overwrite changes no file metadata and
``fdatasync`` flushes the data alone.

Crash behaviour: a crash in the middle of a write (a torn write: part of the new slot on
disk, or none) leaves the other slot, the previous record, intact, and its checksum
holds; the torn slot's does not (or holds its older record), so reading back finds the
previous record. Once ``fdatasync`` returned, the new record is the one read back.

Nothing older than the two newest records stays in the file: a record shorter than what
its slot held is written with zeros over the rest of the old one. (The write-ahead record
holds blocks, and a block's payloads may be erased later: they must not linger in a slot's
tail.)

A record that does not fit the slots, and the first record of a file that does not exist,
are written by making a new file of larger slots (at least :data:`MIN_CAPACITY_BYTES`,
doubled until it fits) with the record in its first slot, and replacing the file with it
(write, fsync, rename, fsync the directory): a crash leaves the old file or the new one,
each with a whole record. That happens only as a record outgrows every earlier one.

A file from before this format (the record's bytes alone, written by replacing the file)
is read as that record and rewritten in this format the same crash-safe way when the
file is opened (:meth:`RecordFile.open`): the old file stays whole until the new one
replaces it.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from types import TracebackType

import structlog

from ..core.crypto import blake2b256
from ..store.files import remove_leftover, write_atomic

log = structlog.get_logger(__name__)

MAGIC = b"\xffIOMTrec"  # no record of the older format (a msgpack array) starts with 0xff
HEADER = struct.Struct(">8sIQI32s")  # magic, slot capacity, sequence, length, blake2b-256
PAGE_BYTES = 4096  # slot alignment: one slot's write never shares a sector with the other's
MIN_CAPACITY_BYTES = PAGE_BYTES  # the smallest slot
MAX_RECORD_BYTES = 256 * 1024 * 1024  # larger records are refused (a bug: a few MB at most)
FILE_MODE = 0o600  # private: what the authority signed, the blocks it signs for


class RecordFileError(RuntimeError):
    """The file is in this format but neither slot holds a whole record (damaged outside
    any crash this format survives: two writes cannot both be torn)."""


def _digest(capacity: int, seq: int, payload: bytes) -> bytes:
    return blake2b256(struct.pack(">IQI", capacity, seq, len(payload)) + payload)


def encode_slot(capacity: int, seq: int, payload: bytes) -> bytes:
    """One slot's bytes (header and payload, without the padding)."""
    return HEADER.pack(MAGIC, capacity, seq, len(payload),
                       _digest(capacity, seq, payload)) + payload


def _capacity_for(size: int) -> int:
    capacity = MIN_CAPACITY_BYTES
    while capacity < HEADER.size + size:
        capacity *= 2
    return capacity


def _read_slot(raw: bytes, offset: int) -> tuple[int, int, bytes] | None:
    """The (sequence, capacity, payload) of the slot at ``offset``, or None unless its
    header and checksum hold and its capacity puts it at ``offset``."""
    if len(raw) < offset + HEADER.size:
        return None
    magic, capacity, seq, length, digest = HEADER.unpack_from(raw, offset)
    if (magic != MAGIC or offset not in (0, capacity) or capacity % PAGE_BYTES
            or HEADER.size + length > capacity):
        return None
    payload = raw[offset + HEADER.size:offset + HEADER.size + length]
    if len(payload) != length or _digest(capacity, seq, payload) != digest:
        return None
    return seq, capacity, payload


def is_record_file(raw: bytes) -> bool:
    """Whether ``raw`` is a file of this format (slot 0, or a second slot of the file's
    half size, starts with :data:`MAGIC`); else it is the older format, the record's bytes
    alone (a msgpack array, never starting with 0xff)."""
    half = len(raw) // 2
    return raw.startswith(MAGIC) or (
        len(raw) % (2 * PAGE_BYTES) == 0 and raw[half:half + len(MAGIC)] == MAGIC)


def read_slots(raw: bytes) -> tuple[int, int, int, bytes]:
    """The newest whole record of a file of this format: (slot index, sequence, slot
    capacity, payload). Raises :class:`RecordFileError` if neither slot holds one."""
    offsets = {0, len(raw) // 2}
    if raw.startswith(MAGIC):  # slot 0's header says where slot 1 is (checked below)
        offsets.add(HEADER.unpack_from(raw)[1])
    whole = []
    for offset in offsets:
        found = _read_slot(raw, offset)
        if found is not None:
            seq, capacity, payload = found
            whole.append((seq, 0 if offset == 0 else 1, capacity, payload))
    if not whole:
        raise RecordFileError("neither slot holds a whole record")
    seq, slot, capacity, payload = max(whole)
    return slot, seq, capacity, payload


class RecordFile:
    """The newest record of one file (module doc), kept open for writing; use :meth:`open`.

    Not thread-safe: one writer at a time (the node writes each file from one task, and
    waits for each write).
    """

    def __init__(self, path: Path, fd: int | None, capacity: int, slot: int, seq: int,
                 payload: bytes | None, dirty: tuple[int, int] = (0, 0)) -> None:
        self.path = path
        self._dirty = list(dirty)  # bytes at the start of each slot that may not be zero
        self._fd = fd  # None until the file exists
        self.capacity = capacity  # bytes per slot
        self._slot = slot  # the slot of the newest record
        self._seq = seq  # its sequence number
        self.payload = payload  # the newest record (None: the file does not exist)

    @classmethod
    def open(cls, path: Path) -> RecordFile:
        """Read the newest record of ``path`` (none if the file does not exist), rewriting a
        file of the older format in this one first. Raises :class:`RecordFileError` if the
        file is in this format and holds no whole record. A temporary file left by a crash
        while the file was replaced is removed."""
        if remove_leftover(path):
            log.info("record_file_leftover_removed", path=str(path))
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls.anew(path)
        if is_record_file(raw):
            slot, seq, capacity, payload = read_slots(raw)
            fd = os.open(path, os.O_RDWR)
            dirty = (len(raw[:capacity].rstrip(b"\0")),
                     len(raw[capacity:2 * capacity].rstrip(b"\0")))
            return cls(path, fd, capacity, slot, seq, payload, dirty)
        record = cls(path, None, 0, 0, 0, raw)
        if raw:  # an empty file is no record, as in the older format
            record._replace(raw)
            log.info("record_file_migrated", path=str(path), bytes=len(raw))
        return record

    @classmethod
    def anew(cls, path: Path) -> RecordFile:
        """A record file whose first :meth:`write` replaces whatever ``path`` holds."""
        return cls(path, None, 0, 0, 0, None)

    def write(self, payload: bytes) -> None:
        """Make ``payload`` the newest record, durable when this returns."""
        if len(payload) > MAX_RECORD_BYTES:
            raise ValueError(f"a record of {len(payload)} bytes is over "
                             f"{MAX_RECORD_BYTES} ({self.path})")
        if self._fd is None or HEADER.size + len(payload) > self.capacity:
            self._replace(payload)
            return
        slot, seq = 1 - self._slot, self._seq + 1
        data = encode_slot(self.capacity, seq, payload)
        used, stale = len(data), self._dirty[slot]
        if stale > used:  # zeros over the rest of the record this slot held
            data += bytes(stale - used)
        self._dirty[slot] = max(stale, used)  # until the write is known whole
        written = os.pwrite(self._fd, data, slot * self.capacity)
        if written != len(data):
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
        os.fdatasync(self._fd)
        self._slot, self._seq, self.payload = slot, seq, payload
        self._dirty[slot] = used

    def _replace(self, payload: bytes) -> None:
        """Write a new file of slots large enough for ``payload``, holding it in slot 0,
        and rename it over :attr:`path` (module doc)."""
        capacity = max(self.capacity, _capacity_for(len(payload)))
        seq = self._seq + 1
        image = bytearray(2 * capacity)  # zeros: every block of the file written now
        data = encode_slot(capacity, seq, payload)
        image[:len(data)] = data
        write_atomic(self.path, image, FILE_MODE)
        self.close()
        self._fd = os.open(self.path, os.O_RDWR)
        self.capacity, self._slot, self._seq, self.payload = capacity, 0, seq, payload
        self._dirty = [len(data), 0]

    def close(self) -> None:
        """Close the file (a later :meth:`write` makes it anew, with two fsyncs)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RecordFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
