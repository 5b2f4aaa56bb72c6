"""A device's anti-replay window over reading sequence numbers (RFC 4303, section 3.4.3).

A reading is accepted when its sequence number was never used by its device and is above
``highest - W``, where ``highest`` is the highest sequence number the device used and ``W``
is the genesis parameter ``replay_window``. Gateways batch, retry and reorder, and a
partition can commit a device's later readings before its earlier ones: a window lets those
earlier ones in, where a strictly increasing rule would refuse them forever. A replay is
still refused: the window remembers, bit by bit, which of the last ``W`` numbers were used.

Stored per device (state key ``q <device>``): ``highest`` as 8 bytes big-endian, then the
bitmap, big-endian, in as few bytes as it needs (bit ``i`` set: ``highest - i`` was used).
A record of exactly 8 bytes is the older strictly increasing form: every number up to its
highest counts as used. Sequence numbers start at 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import errors as e

DEFAULT_REPLAY_WINDOW = 1024  # sequence numbers a device's reading may lag its highest
# (RFC 4303 suggests 32 or 64 for a link; a gateway holding a partition's backlog of a
# device sending 10 readings/s is 100 s behind at 1024; 128 bytes of state per device)
MAX_REPLAY_WINDOW = 65_536  # bits per device record (8 KiB): state read per reading
_HIGHEST_BYTES = 8


@dataclass(frozen=True, slots=True)
class SeqWindow:
    """The sequence numbers a device has used: ``highest`` and the ``W`` below it."""

    highest: int
    bitmap: int  # bit i set: sequence number ``highest - i`` was used


def highest(raw: bytes | None) -> int:
    """The highest sequence number in a stored record (0: none used), without the bitmap."""
    return 0 if raw is None else int.from_bytes(raw[:_HIGHEST_BYTES], "big")


def decode(raw: bytes | None, size: int) -> SeqWindow:
    """The window stored as ``raw`` (None: a device with no reading yet)."""
    if raw is None:
        return SeqWindow(0, 1)  # sequence number 0 counts as used: they start at 1
    top = int.from_bytes(raw[:_HIGHEST_BYTES], "big")
    if len(raw) == _HIGHEST_BYTES:  # the strictly increasing record: all below were used
        return SeqWindow(top, (1 << size) - 1)
    return SeqWindow(top, int.from_bytes(raw[_HIGHEST_BYTES:], "big"))


def encode(window: SeqWindow) -> bytes:
    bitmap = window.bitmap
    return (window.highest.to_bytes(_HIGHEST_BYTES, "big")
            + bitmap.to_bytes(max(1, (bitmap.bit_length() + 7) // 8), "big"))


def fresh(window: SeqWindow, seq: int, size: int) -> bool:
    """Whether ``seq`` is inside the window and unused (what :func:`check` accepts)."""
    if seq > window.highest:
        return True
    lag = window.highest - seq
    return lag < size and not (window.bitmap >> lag) & 1


def check(window: SeqWindow, seq: int, size: int) -> None:
    """Raise the precise error unless ``seq`` may be used now."""
    if seq > window.highest:
        return
    if seq == 0:
        raise e.StaleSequenceError("sequence numbers start at 1")
    lag = window.highest - seq
    if lag >= size:
        raise e.StaleSequenceError(
            f"sequence number {seq} is too old: the device's highest is {window.highest} "
            f"and at most {size - 1} below it are accepted")
    if (window.bitmap >> lag) & 1:
        raise e.ReplayedSequenceError(
            f"sequence number {seq} was already used by this device (highest {window.highest})")


def mark(window: SeqWindow, seq: int, size: int) -> SeqWindow:
    """The window once ``seq`` (checked with :func:`check`) is used."""
    if seq > window.highest:
        shift = seq - window.highest
        bitmap = ((window.bitmap << shift) | 1) & ((1 << size) - 1) if shift < size else 1
        return SeqWindow(seq, bitmap)
    return SeqWindow(window.highest, window.bitmap | (1 << (window.highest - seq)))
