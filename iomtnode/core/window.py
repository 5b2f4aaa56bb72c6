"""A device's anti-replay window over reading sequence numbers (RFC 4303, section 3.4.3).

A reading is accepted when its sequence number was never used by its device and is above
``highest - W``, where ``highest`` is the highest sequence number the device used and ``W``
is the genesis parameter ``replay_window``. Gateways batch, retry and reorder, and a
partition can commit a device's later readings before its earlier ones: a window lets those
earlier ones in, where a strictly increasing rule would refuse them forever. A replay is
still refused: the window remembers, bit by bit, which of the last ``W`` numbers were used.

Stored per device (state key ``q <device>``): ``highest`` as 8 bytes big-endian, then the
bitmap, big-endian, in as few bytes as it needs (bit ``i`` set: ``highest - i`` was used).
A record of only the 8 bytes means every number in the window was used (numbers below 1 do
not exist and count as used): a device whose readings arrive in order keeps that short form,
and each reading costs what a strictly increasing counter costs. The same form was the
strictly increasing rule's record, and means the same. Sequence numbers start at 1.

Every reading passes here two or three times on each node (admission, the block being
built, the block received), so the functions work on the stored bytes directly.
"""

from __future__ import annotations

from . import errors as e

DEFAULT_REPLAY_WINDOW = 1024  # sequence numbers a device's reading may lag its highest
# (RFC 4303 suggests 32 or 64 for a link; a gateway holding a partition's backlog of a
# device sending 10 readings/s is 100 s behind at 1024; 128 bytes of state per device)
MAX_REPLAY_WINDOW = 65_536  # bits per device record (8 KiB): state read per reading
_TOP = 8  # bytes of the highest sequence number at the start of a record


def highest(raw: bytes | None) -> int:
    """The highest sequence number in a stored record (0: none used)."""
    return 0 if raw is None else int.from_bytes(raw[:_TOP], "big")


def _bits(raw: bytes, size: int) -> int:
    if len(raw) == _TOP:  # every number in the window was used
        return (1 << size) - 1
    return int.from_bytes(raw[_TOP:], "big")


def _record(top: int, bits: int, size: int) -> bytes:
    """The record of ``top`` and ``bits`` (kept to the window and to numbers that exist)."""
    mask = (1 << min(size, top)) - 1
    bits &= mask
    if bits == mask:
        return top.to_bytes(_TOP, "big")
    return top.to_bytes(_TOP, "big") + bits.to_bytes((bits.bit_length() + 7) // 8, "big")


def fresh(raw: bytes | None, seq: int, size: int) -> bool:
    """Whether :func:`use` accepts ``seq`` (no error raised, nothing computed to store)."""
    top = highest(raw)
    if seq > top:
        return True
    lag = top - seq
    return (raw is not None and seq > 0 and lag < size
            and not (_bits(raw, size) >> lag) & 1)


def use(raw: bytes | None, seq: int, size: int) -> bytes:
    """The record once ``seq`` is used, or the precise error if it may not be.

    ``raw`` is the device's record (None: no reading yet), ``size`` the window W."""
    top = highest(raw)
    if seq > top:
        if seq == top + 1 and (raw is None or len(raw) == _TOP):
            return seq.to_bytes(_TOP, "big")  # in order, all used: the usual case
        if raw is None:
            return _record(seq, 1, size)
        shift = seq - top  # a jump of the window's size or more leaves none of the old bits
        older = _bits(raw, size) << shift if shift < size else 0
        return _record(seq, older | 1, size)
    if seq == 0:
        raise e.StaleSequenceError("sequence numbers start at 1")
    lag = top - seq
    if lag >= size:
        raise e.StaleSequenceError(
            f"sequence number {seq} is too old: the device's highest is {top} "
            f"and at most {size - 1} below it are accepted")
    assert raw is not None  # top > 0
    bits = _bits(raw, size)
    if (bits >> lag) & 1:
        raise e.ReplayedSequenceError(
            f"sequence number {seq} was already used by this device (highest {top})")
    return _record(top, bits | (1 << lag), size)
