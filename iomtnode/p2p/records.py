"""Signed peer records: where a node can be reached, as the node itself says.

``record = encode([body, signature])``, ``body = encode([node_id, [address, ...], seq,
time_ms])``, signed by the node key in :attr:`Domain.PEER_RECORD`. A record with a
higher ``seq`` replaces a lower one (as with Ethereum's ENR), so a node that moves bumps
its seq and its new address wins everywhere it spreads, whoever relays it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core import codec
from ..core import fields as f
from ..core.crypto import BadSignatureError, Domain, SigningKey, blake2b256, verify

MAX_RECORD_BYTES = 2048
MAX_ADDRESSES = 8
MAX_ADDRESS_BYTES = 300


class RecordError(ValueError):
    """A peer record that is malformed or not signed by the node it names."""


@dataclass(frozen=True, slots=True)
class PeerRecord:
    node_id: bytes
    addresses: tuple[str, ...]  # "host:port" of the node's p2p websocket listener
    seq: int
    time_ms: int
    raw: bytes  # the signed wire form, as signed or decoded: relayed and stored as it is

    def newer_than(self, other: PeerRecord | None) -> bool:
        return other is None or self.seq > other.seq


def _body(node_id: bytes, addresses: tuple[str, ...], seq: int, time_ms: int) -> bytes:
    return codec.encode([node_id, list(addresses), seq, time_ms])


def sign_record(key: SigningKey, addresses: tuple[str, ...], seq: int, time_ms: int,
                chain_id: str) -> PeerRecord:
    if not 1 <= len(addresses) <= MAX_ADDRESSES:
        raise ValueError(f"a record holds 1 to {MAX_ADDRESSES} addresses")
    body = _body(key.public, addresses, seq, time_ms)
    signature = key.sign(Domain.PEER_RECORD, chain_id, blake2b256(body))
    return PeerRecord(key.public, addresses, seq, time_ms, codec.encode([body, signature]))


def decode_record(raw: bytes, chain_id: str) -> PeerRecord:
    """Decode and verify a record from untrusted bytes. Raises :class:`RecordError`."""
    try:
        outer = f.record("peer record", codec.decode(raw, max_bytes=MAX_RECORD_BYTES), 2)
        body = f.max_bytes(MAX_RECORD_BYTES)("peer record body", outer[0])
        signature = f.signature("peer record signature", outer[1])
        value = f.record("peer record body", codec.decode(body), 4)
        node_id = f.key("peer record node_id", value[0])
        if type(value[1]) is not list or not 1 <= len(value[1]) <= MAX_ADDRESSES:
            raise f.FieldError(f"peer record needs 1 to {MAX_ADDRESSES} addresses")
        addresses = tuple(f.text(MAX_ADDRESS_BYTES)("address", a) for a in value[1])
        seq = f.u64("peer record seq", value[2])
        time_ms = f.u64("peer record time_ms", value[3])
    except (codec.DecodeError, f.FieldError) as exc:
        raise RecordError(str(exc)) from None
    try:
        verify(node_id, Domain.PEER_RECORD, chain_id, blake2b256(body), signature)
    except BadSignatureError:
        raise RecordError(f"peer record of {node_id.hex()[:16]} has a bad signature") from None
    return PeerRecord(node_id, addresses, seq, time_ms, bytes(raw))
