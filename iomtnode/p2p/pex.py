"""Peer exchange: the router's own reactor for signed peer records.

On connect each side takes the record the other sent in its Auth and sends a sample of the
records it knows (its own first); records also go out every :data:`~.discovery.PEX_INTERVAL_S`
and when this node moves. A record that does not verify costs its sender
:data:`~.score.BAD_SIGNATURE`; a record verified before costs a lookup
(:class:`~.recordcache.VerifiedRecords`). A record goes to the address book with the netgroup
of the peer that told us (the book's buckets are by source); a new address of a node that
answered us before, and is not connected, wakes the dialer.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

import structlog
import trio

from . import score
from .dialer import Dialer
from .discovery import BOOK_FLUSH_S, PEX_INTERVAL_S, PEX_RECORDS, AddressBook, OwnRecord
from .messages import GET_PEERS_RATE, PEER_RECORDS_RATE, GetPeers, Message, PeerRecords
from .peer import Peer
from .recordcache import VerifiedRecords
from .records import RecordError
from .slots import netgroup
from .transport import ip_of

log = structlog.get_logger(__name__)

RATES = {PeerRecords: PEER_RECORDS_RATE, GetPeers: GET_PEERS_RATE}  # per peer


class Peers(Protocol):
    """What peer exchange needs of the router."""

    def get(self, node_id: bytes) -> Peer | None: ...

    def broadcast(self, msg: Message) -> int: ...

    def penalize(self, peer: Peer, points: int, reason: str) -> bool: ...


class PeerExchange:
    """Learn and share peer records (module doc)."""

    def __init__(self, peers: Peers, book: AddressBook, own: OwnRecord, dialer: Dialer,
                 node_id: bytes, chain_id: str, rng: random.Random,
                 now_ms: Callable[[], int]) -> None:
        self._peers = peers
        self._now_ms = now_ms
        self._book = book
        self._own = own
        self._dialer = dialer
        self._node_id = node_id
        self._rng = rng
        self.verified = VerifiedRecords(chain_id)

    def connected(self, peer: Peer) -> None:
        if peer.record:
            self._take_records(peer, [peer.record])
        self._book.was_peer(peer.node_id)  # a restart dials it first among new records
        peer.send(PeerRecords(self._records_to_share()))

    def disconnected(self, peer: Peer) -> None:
        pass

    async def receive(self, peer: Peer, msg: Any) -> None:
        match msg:
            case PeerRecords():
                self._take_records(peer, msg.records)
            case GetPeers():
                peer.send(PeerRecords(self._records_to_share()))

    def announce(self, record: bytes) -> None:
        """Send this node's new record to every peer."""
        self._peers.broadcast(PeerRecords([record]))

    def _records_to_share(self) -> list[bytes]:
        records = [r.raw for r in self._book.sample(PEX_RECORDS - 1, self._rng)]
        own = self._own.raw
        return [own, *records] if own else records

    def _take_records(self, peer: Peer, raws: list[bytes]) -> None:
        source = netgroup(ip_of(peer.remote))
        for raw in raws:
            try:
                record = self.verified.decode(raw)
            except RecordError as exc:
                self._peers.penalize(peer, score.BAD_SIGNATURE, f"peer record: {exc}")
                continue
            if record.node_id == self._node_id:
                continue
            if self._book.update(record, self._now_ms(), source):
                log.debug("peer_record_learned", node=record.node_id.hex()[:16],
                          address=record.addresses[0], seq=record.seq, source=source)
                if self._peers.get(record.node_id) is None and self._book.is_tried(
                        record.node_id):
                    self._dialer.wake(reset=record.addresses[0])

    async def run(self) -> None:
        """Flush the address book every :data:`BOOK_FLUSH_S` and share records every
        :data:`PEX_INTERVAL_S` until cancelled; the book is flushed on the way out."""
        next_pex = trio.current_time() + PEX_INTERVAL_S
        try:
            while True:
                await trio.sleep(BOOK_FLUSH_S)
                self._book.flush()
                if trio.current_time() >= next_pex:
                    next_pex += PEX_INTERVAL_S
                    self._peers.broadcast(PeerRecords(self._records_to_share()))
        finally:
            self._book.flush()
