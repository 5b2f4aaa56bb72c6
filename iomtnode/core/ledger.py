"""The state's keyspace and its typed reads and writes: :class:`State`, an overlay of writes
over a base key-value reader, and :class:`BlockContext`, what a rule may know of the block.

Pure. The rules that read and write it are in :mod:`.state` (devices, readings, consent) and
:mod:`.governance` (authorities, evidence); both import this module and neither is imported
here, so the rules and the state they work on form no import cycle.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import codec, window
from .genesis import Genesis

ONLINE_WINDOW_BLOCKS = 32  # an authority is online if it certified one of this many blocks

K_AUTHORITIES = b"a"
K_SCHEDULED = b"c"
K_EVIDENCE = b"e"
K_ONLINE = b"o"
K_HANDOFFS = b"k"
K_VOTES = b"v"
K_STREAMS = b"n"  # active devices per stream
K_STREAM = b"s"  # a stream's epoch, grantees and erasure
K_GRANT = b"g"
K_ANCHORS = b"l"  # audit anchors per node: [authority, next index]
K_ANCHOR_RANGES = b"L"  # per node and first index (u64): [count, root, tx id, height]
K_BLOB_NAMED = b"b"  # per commitment of a class 1/2 reading committed: its blob is taken

DEVICE_CACHE = 16_384  # decoded device records kept (about 5 MB)


@dataclass(frozen=True, slots=True)
class Device:
    key: bytes
    stream: bytes  # the pseudonym of the patient's scope the device records into
    profile_hash: bytes  # salted hash of its class and maker
    status: str
    admitted_height: int
    successor: bytes  # the new key after a rotation, else b""


@functools.lru_cache(maxsize=DEVICE_CACHE)
def _device(key: bytes, raw: bytes) -> Device:
    """The device record stored as ``raw`` (pure, so decoded once per record version:
    every reading reads its device's record, in the mempool and again in the block)."""
    return Device(key, *codec.decode(raw))


@dataclass(frozen=True, slots=True)
class Stream:
    """A stream's record: its current epoch (0: none announced yet) and that epoch's X25519
    public key, the live grantees (ascending), and whether its whole scope was erased."""

    epoch: int
    public: bytes
    grantees: tuple[bytes, ...]
    erased: bool


NO_STREAM = Stream(0, b"", (), False)


@functools.lru_cache(maxsize=DEVICE_CACHE)
def _stream(raw: bytes) -> Stream:
    epoch, public, grantees, erased = codec.decode(raw)
    return Stream(epoch, public, tuple(grantees), erased)


@dataclass(frozen=True, slots=True)
class GrantRecord:
    box: bytes  # the grantee's X25519 key every epoch's secret is wrapped to
    mode: int  # 0 forward, 1 history
    expires_ms: int
    first_epoch: int
    height: int
    tx_id: bytes  # the grant transaction (an audit record of a grantee's read names it)


@dataclass(frozen=True, slots=True)
class BlockContext:
    """What a rule may know besides the state: the block being built or applied."""

    height: int
    time_ms: int
    genesis: Genesis
    # the authorities whose precommits certify the parent (the block's ``last_commit``)
    signers: tuple[bytes, ...] = ()


class State:
    """Typed reads and writes over a base key-value reader, with a write overlay."""

    def __init__(self, base: Callable[[bytes], bytes | None]) -> None:
        self._base = base
        self._writes: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self._writes:
            return self._writes[key]
        return self._base(key)

    def get_value(self, key: bytes) -> Any:
        raw = self.get(key)
        return None if raw is None else codec.decode(raw)

    def put_value(self, key: bytes, value: Any) -> None:
        self._writes[key] = codec.encode(value)

    def delete(self, key: bytes) -> None:
        self._writes[key] = None

    def changes(self) -> dict[bytes, bytes | None]:
        """Every write since this overlay was made (``None`` = delete)."""
        return dict(self._writes)

    # typed accessors -----------------------------------------------------------------

    def authorities(self) -> tuple[bytes, ...]:
        value = self.get_value(K_AUTHORITIES)
        return tuple(value) if value else ()

    def set_authorities(self, authorities: tuple[bytes, ...]) -> None:
        self.put_value(K_AUTHORITIES, list(authorities))

    def device(self, key: bytes) -> Device | None:
        raw = self.get(b"d" + key)
        return None if raw is None else _device(key, raw)

    def put_device(self, device: Device) -> None:
        self.put_value(b"d" + device.key, [
            device.stream, device.profile_hash, device.status, device.admitted_height,
            device.successor,
        ])

    def stream_devices(self, stream: bytes) -> int:
        """How many active devices record into ``stream`` (0: a key the ledger does not
        know as a stream)."""
        raw = self.get(K_STREAMS + stream)
        return 0 if raw is None else int.from_bytes(raw, "big")

    def count_stream_device(self, stream: bytes, delta: int) -> None:
        """Add ``delta`` (+1 or -1) to the stream's active devices (the record goes at 0)."""
        count = self.stream_devices(stream) + delta
        assert count >= 0, "a stream's active devices are counted from their admissions"
        if count:
            self._writes[K_STREAMS + stream] = count.to_bytes(8, "big")
        else:
            self._writes[K_STREAMS + stream] = None

    def stream(self, stream: bytes) -> Stream:
        raw = self.get(K_STREAM + stream)
        return NO_STREAM if raw is None else _stream(raw)

    def put_stream(self, key: bytes, stream: Stream) -> None:
        self.put_value(K_STREAM + key, [stream.epoch, stream.public, list(stream.grantees),
                                        stream.erased])

    def last_seq(self, device: bytes) -> int:
        """The highest sequence number the device used (0: none)."""
        return window.highest(self.get(b"q" + device))

    def seq_record(self, device: bytes) -> bytes | None:
        """The device's anti-replay window as stored (see :mod:`.window`)."""
        return self.get(b"q" + device)

    def set_seq_record(self, device: bytes, record: bytes) -> None:
        self._writes[b"q" + device] = record

    def pending_admission(self, device: bytes) -> list[Any] | None:
        return self.get_value(b"p" + device)

    def grant(self, stream: bytes, grantee: bytes) -> GrantRecord | None:
        value = self.get_value(K_GRANT + stream + grantee)
        return None if value is None else GrantRecord(*value)

    def put_grant(self, stream: bytes, grantee: bytes, grant: GrantRecord) -> None:
        self.put_value(K_GRANT + stream + grantee, [grant.box, grant.mode, grant.expires_ms,
                                                    grant.first_epoch, grant.height,
                                                    grant.tx_id])

    def delete_grant(self, stream: bytes, grantee: bytes) -> None:
        self.delete(K_GRANT + stream + grantee)

    def handoffs(self) -> list[list[Any]]:
        """``[height, next authorities]`` for each height whose next block is certified by
        another authority set, oldest first."""
        return self.get_value(K_HANDOFFS) or []

    def scheduled_changes(self) -> list[list[Any]]:
        return self.get_value(K_SCHEDULED) or []

    def last_certified(self, authority: bytes) -> int:
        raw = self.get(K_ONLINE + authority)
        return -1 if raw is None else int.from_bytes(raw, "big")

    def set_last_certified(self, authority: bytes, height: int) -> None:
        self._writes[K_ONLINE + authority] = height.to_bytes(8, "big")

    def online(self, height: int) -> set[bytes]:
        """The authorities that certified one of the last :data:`ONLINE_WINDOW_BLOCKS`
        blocks before ``height`` (genesis authorities count from block 0; one that joined
        later only from its first precommit in a certificate)."""
        since = max(0, height - ONLINE_WINDOW_BLOCKS)  # -1: never certified
        return {a for a in self.authorities() if self.last_certified(a) >= since}

    def blob_named(self, commitment: bytes) -> bool:
        """Whether a committed class 1 or 2 reading names the blob of ``commitment``."""
        return self.get(K_BLOB_NAMED + commitment) is not None

    def name_blob(self, commitment: bytes) -> None:
        self._writes[K_BLOB_NAMED + commitment] = b""

    def seen(self, tx_id: bytes) -> bool:
        return self.get(b"x" + tx_id) is not None

    def mark_seen(self, tx_id: bytes) -> None:
        self._writes[b"x" + tx_id] = b""
