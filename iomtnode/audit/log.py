"""The node's audit log on disk: append-only, fsynced once per batch, and safe across crashes.

Layout (``HOME/audit/``, directory mode 0700, files 0600):

- ``LOCK``: held (``flock``) by the one process that has the log open.
- Segment files ``<first index, 20 digits>.log``, each a run of frames, one record per frame:
  ``u32 length | u32 CRC-32(length bytes | payload) | payload`` (big-endian), the payload being
  the record's canonical encoding (:mod:`iomtnode.audit.record`). A segment holds consecutive
  indices from the one in its name; a new one starts when the current one would pass
  :data:`MAX_SEGMENT_BYTES`.

Writes: :meth:`AuditLog.append` writes a batch's frames with one ``write`` and one ``fsync``
(a batch over :data:`MAX_CHUNK_BYTES` is written in chunks of that size, each fsynced before
the next); a new segment also fsyncs the directory. Until the fsync returns, the batch's
records are not in the log.

Opening reads every segment once and checks every frame's checksum. A crash can only tear what
was written since the last fsync, so a bad frame within :data:`TORN_TAIL_MAX_BYTES` of the end
of the last segment is a torn tail: the file is cut there and ``audit_log_tail_truncated`` is
logged. A bad frame anywhere else (earlier in the last segment, or in a segment already
sealed), or whole frames that do not hold consecutive indices (checked at every kept offset
and at each segment's last record, so a record cut out or added shifts one), is corruption,
and :class:`AuditLogCorruptError` names the file and the offset; the log does not open, as
a log with a hole would no longer match its anchors.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import struct
import threading
import zlib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from .record import (
    MAX_RECORD_BYTES,
    SALT_BYTES,
    AuditCall,
    AuditRecord,
    AuditRecordError,
    decode_record,
    leaf_of,
)

log = structlog.get_logger(__name__)

MAX_AUDIT_RANGE = 4096  # records one read (read, leaves) may ask for
MAX_AUDIT_READ_BYTES = 4 * 1024 * 1024  # encoded records one read returns (fits an API frame)
MAX_SEGMENT_BYTES = 64 * 1024 * 1024  # a segment file; opening reads one whole segment at a time
MAX_CHUNK_BYTES = 1024 * 1024  # written and fsynced at once; a crash tears at most this much
FRAME = struct.Struct(">II")  # payload length, CRC-32 of the length bytes and the payload
TORN_TAIL_MAX_BYTES = MAX_CHUNK_BYTES + FRAME.size + MAX_RECORD_BYTES  # a chunk's largest size
INDEX_EVERY = 64  # records between two offsets kept in memory (a read walks at most this many)
DIR_MODE = 0o700
FILE_MODE = 0o600
LOCK_NAME = "LOCK"
SEGMENT_RE = re.compile(r"(\d{20})\.log")


class AuditLogError(Exception):
    """The log cannot be used: in use by another process, closed, or a write failed."""


class AuditLogCorruptError(AuditLogError):
    """A frame that is not whole or fails its checksum where no crash could have left it."""


class AuditRangeError(ValueError):
    """A read outside the log or over :data:`MAX_AUDIT_RANGE` records."""


def segment_name(first: int) -> str:
    return f"{first:020d}.log"


def frame(payload: bytes) -> bytes:
    """One frame: the payload with its length and checksum before it."""
    head = struct.pack(">I", len(payload))
    return head + struct.pack(">I", zlib.crc32(payload, zlib.crc32(head))) + payload


def _frame_error(data: bytes | memoryview, pos: int) -> tuple[str | None, int]:
    """(why the frame at ``pos`` is bad or None, its payload length)."""
    if len(data) - pos < FRAME.size:
        return f"frame header cut short ({len(data) - pos} of {FRAME.size} bytes)", 0
    length, crc = FRAME.unpack_from(data, pos)
    if not 0 < length <= MAX_RECORD_BYTES:
        return f"frame length {length} outside 1..{MAX_RECORD_BYTES}", 0
    end = pos + FRAME.size + length
    if end > len(data):
        return f"frame of {length} bytes cut short at {len(data) - pos - FRAME.size}", 0
    if zlib.crc32(data[pos + FRAME.size:end], zlib.crc32(data[pos:pos + 4])) != crc:
        return "frame checksum mismatch", 0
    return None, length


@dataclass(slots=True)
class _Segment:
    path: Path
    first: int  # index of its first record
    count: int  # records it holds
    size: int  # bytes of whole frames
    offsets: array  # offset of record first + k * INDEX_EVERY, for every k


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scan(path: Path, first: int, *, last: bool) -> _Segment:
    """Walk a segment's frames; cut a torn tail of the last segment, refuse any other bad frame."""
    data = path.read_bytes()
    offsets = array("Q")
    pos = count = last_pos = 0
    while pos < len(data):
        reason, length = _frame_error(data, pos)
        if reason is not None:
            if not last or len(data) - pos > TORN_TAIL_MAX_BYTES:
                raise AuditLogCorruptError(f"{path}: bad frame at offset {pos}: {reason}")
            with open(path, "r+b") as f:
                f.truncate(pos)
                os.fsync(f.fileno())
            log.warning("audit_log_tail_truncated", file=str(path), offset=pos,
                        dropped_bytes=len(data) - pos, reason=reason)
            break
        if count % INDEX_EVERY == 0:
            offsets.append(pos)
        last_pos = pos
        pos += FRAME.size + length
        count += 1
    for k, at in enumerate(offsets):  # a whole frame cut out or added shifts the indices
        _check_index(path, data, at, first + k * INDEX_EVERY)
    if count:
        _check_index(path, data, last_pos, first + count - 1)
    return _Segment(path, first, count, pos, offsets)


def _check_index(path: Path, data: bytes, pos: int, expected: int) -> None:
    """Raise :class:`AuditLogCorruptError` unless the (whole, checked) frame at ``pos`` holds
    the record of index ``expected``."""
    length = FRAME.unpack_from(data, pos)[0]
    try:
        index = decode_record(data[pos + FRAME.size:pos + FRAME.size + length]).index
    except AuditRecordError as exc:
        raise AuditLogCorruptError(f"{path}: the record at offset {pos}: {exc}") from None
    if index != expected:
        raise AuditLogCorruptError(
            f"{path}: the record at offset {pos} holds index {index}, not {expected}: a "
            "record was removed or added")


class AuditLog:
    """The audit log in ``directory`` (created if missing).

    Synchronous and thread-safe: appends are serialized, reads may run beside them and see
    the records appended before they started.

    Error handling: :class:`AuditLogCorruptError` at opening (or a read) for a damaged file,
    :class:`AuditLogError` when another process holds the log or a write failed (after which
    the log refuses appends until reopened), :class:`AuditRangeError` for a read outside it.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(directory, DIR_MODE)
        self._lock_fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise AuditLogError(f"{directory} is in use by another process") from None
        try:
            self._segments = self._open_segments()
            self._fd = self._open_for_append(self._segments[-1].path)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._lock = threading.Lock()
        self._failed: str | None = None
        self._closed = False

    def _open_segments(self) -> list[_Segment]:
        found = sorted((int(m.group(1)), p) for p in self.directory.iterdir()
                       if (m := SEGMENT_RE.fullmatch(p.name)))
        if not found:
            path = self.directory / segment_name(0)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
            _fsync_dir(self.directory)
            found = [(0, path)]
        segments: list[_Segment] = []
        expected = 0
        for i, (first, path) in enumerate(found):
            if first != expected:
                raise AuditLogCorruptError(
                    f"{path}: the segment starts at record {first}, but the log before it "
                    f"ends at record {expected} (a segment is missing or out of place)")
            segment = _scan(path, first, last=i == len(found) - 1)
            expected = first + segment.count
            segments.append(segment)
        return segments

    @staticmethod
    def _open_for_append(path: Path) -> int:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        os.fchmod(fd, FILE_MODE)
        return fd

    @property
    def next_index(self) -> int:
        """The index the next appended record gets (the number of records in the log)."""
        last = self._segments[-1]
        return last.first + last.count

    # appending -----------------------------------------------------------------------

    def append(self, calls: Sequence[AuditCall]) -> list[AuditRecord]:
        """Append one record per call, with consecutive indices from :attr:`next_index` and a
        fresh salt each, and fsync them once; returns the records once they are durable."""
        if not calls:
            return []
        salts = os.urandom(SALT_BYTES * len(calls))
        with self._lock:
            if self._closed or self._failed is not None:
                raise AuditLogError(f"the audit log refuses appends: {self._failed or 'closed'}")
            start = self.next_index
            records = [AuditRecord.of(start + i, call,
                                      salts[i * SALT_BYTES:(i + 1) * SALT_BYTES])
                       for i, call in enumerate(calls)]
            chunk: list[bytes] = []
            chunk_bytes = 0
            for rec in records:
                payload = rec.encode()
                if len(payload) > MAX_RECORD_BYTES:  # pragma: no cover - the field limits bound it
                    raise AuditRecordError(f"record of {len(payload)} bytes")
                data = frame(payload)
                segment = self._segments[-1]
                rolls = (segment.size + chunk_bytes + len(data) > MAX_SEGMENT_BYTES
                         and segment.size + chunk_bytes > 0)
                if chunk and (rolls or chunk_bytes + len(data) > MAX_CHUNK_BYTES):
                    self._write(chunk)
                    chunk, chunk_bytes = [], 0
                if rolls:
                    self._roll()
                chunk.append(data)
                chunk_bytes += len(data)
            self._write(chunk)
        return records

    def _write(self, frames: list[bytes]) -> None:
        """Write and fsync ``frames`` at the end of the last segment, then count them."""
        segment = self._segments[-1]
        data = memoryview(b"".join(frames))
        try:
            while data:
                data = data[os.write(self._fd, data):]
            os.fsync(self._fd)
        except OSError as exc:
            self._failed = f"a write failed ({errno.errorcode.get(exc.errno, exc.errno)})"
            try:
                os.ftruncate(self._fd, segment.size)
                os.fsync(self._fd)
            except OSError as again:  # the next opening cuts the torn tail
                log.error("audit_log_truncate_failed", file=str(segment.path), error=str(again))
            log.error("audit_log_write_failed", file=str(segment.path), error=str(exc))
            raise AuditLogError(f"{segment.path}: {self._failed}") from exc
        pos = segment.size
        for item in frames:
            if segment.count % INDEX_EVERY == 0:
                segment.offsets.append(pos)
            pos += len(item)
            segment.count += 1
        segment.size = pos

    def _roll(self) -> None:
        """Start a new segment at the next index (the current one is fsynced already)."""
        first = self.next_index
        path = self.directory / segment_name(first)
        try:
            fd = self._open_for_append(path)
            _fsync_dir(self.directory)
        except OSError as exc:  # a segment file may be left: appending on would misplace it
            self._failed = f"a new segment failed ({errno.errorcode.get(exc.errno, exc.errno)})"
            log.error("audit_log_write_failed", file=str(path), error=str(exc))
            raise AuditLogError(f"{path}: {self._failed}") from exc
        os.close(self._fd)
        self._fd = fd
        self._segments.append(_Segment(path, first, 0, 0, array("Q")))

    # reading -------------------------------------------------------------------------

    def _check_range(self, first: int, count: int) -> None:
        if count > MAX_AUDIT_RANGE:
            raise AuditRangeError(f"{count} records asked, more than the limit of "
                                  f"{MAX_AUDIT_RANGE} per read")
        end = self.next_index
        if first < 0 or count < 0 or first + count > end:
            raise AuditRangeError(f"records {first}..{first + count - 1} asked, the log holds "
                                  f"records 0..{end - 1}")

    def _payloads(self, first: int, count: int) -> Iterator[tuple[int, bytes, str]]:
        """(index, payload, where: file and offset) of records ``first`` to
        ``first + count - 1``, checksums checked."""
        with self._lock:
            if self._closed:
                raise AuditLogError("the audit log is closed")
            self._check_range(first, count)
            spans = []
            for seg in self._segments:
                if seg.first + seg.count <= first or seg.first >= first + count or not seg.count:
                    continue
                at = (max(first, seg.first) - seg.first) // INDEX_EVERY
                spans.append((seg.path, seg.first + at * INDEX_EVERY, seg.offsets[at],
                              min(first + count, seg.first + seg.count)))
        for path, index, offset, end in spans:  # from the kept offset before the first record
            with open(path, "rb", buffering=64 * 1024) as f:
                f.seek(offset)
                while index < end:
                    head = f.read(FRAME.size)
                    length = FRAME.unpack(head)[0] if len(head) == FRAME.size else 0
                    data = head + f.read(min(length, MAX_RECORD_BYTES))
                    reason, _ = _frame_error(data, 0)
                    if reason is not None:
                        raise AuditLogCorruptError(f"{path}: bad frame at offset {offset}: "
                                                   f"{reason}")
                    if index >= first:
                        yield index, data[FRAME.size:], f"{path}: the record at offset {offset}"
                    offset += len(data)
                    index += 1

    def _records(self, first: int, count: int) -> Iterator[tuple[AuditRecord, bytes]]:
        for index, payload, where in self._payloads(first, count):
            try:
                rec = decode_record(payload)
            except AuditRecordError as exc:
                raise AuditLogCorruptError(f"{where}: {exc}") from None
            if rec.index != index:
                raise AuditLogCorruptError(f"{where} holds index {rec.index}, not {index}")
            yield rec, payload

    def read(self, first: int, count: int) -> list[AuditRecord]:
        """Records ``first`` to ``first + count - 1`` (at most :data:`MAX_AUDIT_RANGE`); fewer,
        from ``first`` on, when the rest would pass :data:`MAX_AUDIT_READ_BYTES` (at least one
        is returned). Ask again from where it stopped."""
        return [rec for rec, _ in self.read_with_leaves(first, count)]

    def read_with_leaves(self, first: int, count: int) -> list[tuple[AuditRecord, bytes]]:
        """As :meth:`read`, each record with its leaf (hashed from the stored bytes)."""
        out: list[tuple[AuditRecord, bytes]] = []
        total = 0
        for rec, payload in self._records(first, count):
            total += len(payload)
            if out and total > MAX_AUDIT_READ_BYTES:
                break
            out.append((rec, leaf_of(rec.index, rec.stream, rec.node, payload)))
        return out

    def leaves(self, first: int, count: int) -> list[bytes]:
        """The leaves of records ``first`` to ``first + count - 1`` (at most
        :data:`MAX_AUDIT_RANGE`), all of them."""
        return [leaf_of(rec.index, rec.stream, rec.node, payload)
                for rec, payload in self._records(first, count)]

    # closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the files and release the directory for another process; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._fd)
            os.close(self._lock_fd)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
