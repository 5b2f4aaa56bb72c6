"""Blobs between peers: a node that committed a class 1 or 2 reading without its blob (the
sealed payload uploaded to another node) fetches it by commitment (docs/privacy-store.md).

Every :data:`FETCH_INTERVAL_S`, and soon after each commit, :class:`BlobReactor` asks one peer
(in turn) for up to :data:`MAX_BLOBS_PER_REQUEST` of the blobs the chain lacks
(``GetBlobs``); a peer answers with those of them it holds (``Blobs``), at most
:data:`MAX_BLOBS_REPLY_BYTES` in one answer. A blob is kept only if a committed reading that
lacks it names its commitment, which is the hash of its bytes, so a wrong blob cannot be
stored; one this node did not ask that peer for costs the peer score. Requests are limited
per peer (:data:`GET_BLOBS_RATE`) by the router, and a request naming a commitment twice is
refused unanswered, at the cost of an invalid message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import structlog
import trio

from ..chain.feed import Committed
from ..core import fields as f
from ..core.payload import commitment, sidecar_bytes
from ..p2p import score
from ..p2p.messages import list_of, message
from ..p2p.peer import Peer
from ..p2p.ratelimit import Rate

log = structlog.get_logger(__name__)

MAX_BLOBS_PER_REQUEST = 64  # commitments in one GetBlobs
MAX_BLOB_BYTES = sidecar_bytes(2)  # the largest blob (a class 2 payload, about 128 KiB)
MAX_BLOBS_REPLY_BYTES = 1024 * 1024  # blob bytes in one Blobs answer (8 class 2 blobs)
GET_BLOBS_RATE = Rate(per_s=4, burst=16)  # requests/s per peer: each answer reads up to
# 1 MiB from the store, and an honest node asks at most one peer per FETCH_INTERVAL_S
FETCH_INTERVAL_S = 2.0  # seconds between asks while blobs are missing
ASKED_PER_PEER = 4 * MAX_BLOBS_PER_REQUEST  # commitments remembered as asked of one peer


@message
@dataclass(frozen=True, slots=True)
class GetBlobs:
    """Ask for the blobs of committed readings by their commitments."""

    KIND: ClassVar[int] = 24
    CHECKS: ClassVar[tuple[f.Check, ...]] = (list_of(f.digest, MAX_BLOBS_PER_REQUEST),)
    commitments: list[bytes]


@message
@dataclass(frozen=True, slots=True)
class Blobs:
    """Blobs the sender holds among those asked for."""

    KIND: ClassVar[int] = 25
    CHECKS: ClassVar[tuple[f.Check, ...]] = (
        list_of(f.max_bytes(MAX_BLOB_BYTES), MAX_BLOBS_REPLY_BYTES // sidecar_bytes(1)),)
    blobs: list[bytes]


KINDS = (GetBlobs, Blobs)
RATES = {GetBlobs: GET_BLOBS_RATE}


class BlobChain(Protocol):
    """What the reactor needs of the chain (:class:`~iomtnode.chain.chain.Chain`)."""

    def blob(self, commitment: bytes) -> bytes | None: ...

    def missing_blobs(self, limit: int, after: bytes = b"") -> list[tuple[bytes, bytes]]: ...

    def put_fetched_blob(self, blob: bytes) -> bool: ...


class Peers(Protocol):
    def peers(self) -> list[Peer]: ...

    def penalize(self, peer: Peer, points: int, reason: str) -> bool: ...


class BlobReactor:
    """Serves committed blobs to peers and fetches the ones this node lacks (module doc)."""

    def __init__(self, peers: Peers, chain: BlobChain) -> None:
        self._peers = peers
        self._chain = chain
        self._asked: dict[bytes, set[bytes]] = {}  # peer -> commitments asked of it
        self._turn = 0
        self._after = b""  # the last commitment asked for: the next ask goes on from it
        self._wake = trio.Event()
        self.fetched = 0  # blobs stored from peers

    async def receive(self, peer: Peer, msg: Any) -> None:
        match msg:
            case GetBlobs():
                self._serve(peer, msg.commitments)
            case Blobs():
                self._received(peer, msg.blobs)

    def connected(self, peer: Peer) -> None:
        self._wake.set()

    def disconnected(self, peer: Peer) -> None:
        self._asked.pop(peer.node_id, None)

    def committed(self, committed: Sequence[Committed]) -> None:
        """The commit feed's listener: a block may name blobs this node lacks."""
        self._wake.set()

    def _serve(self, peer: Peer, commitments: list[bytes]) -> None:
        if len(set(commitments)) < len(commitments):  # each would be read and sent again
            self._peers.penalize(peer, score.INVALID_MESSAGE,
                                 f"blobs_request_refused: {len(commitments)} commitments, "
                                 f"not all different")
            return
        blobs, size = [], 0
        for address in commitments:
            blob = self._chain.blob(address)
            if blob is not None:
                if size + len(blob) > MAX_BLOBS_REPLY_BYTES:
                    break
                blobs.append(blob)
                size += len(blob)
        peer.send(Blobs(blobs))

    def _received(self, peer: Peer, blobs: list[bytes]) -> None:
        asked = self._asked.get(peer.node_id, set())
        for blob in blobs:
            address = commitment(blob)
            if address not in asked:
                self._peers.penalize(peer, score.INVALID_MESSAGE,
                                     "a blob that matches no commitment asked of it")
                log.info("blob_refused", peer=peer.node_id.hex()[:16], bytes=len(blob))
                return
            asked.discard(address)
            if self._chain.put_fetched_blob(blob):
                self.fetched += 1
                log.debug("blob_fetched", peer=peer.node_id.hex()[:16],
                          commitment=address.hex()[:16])

    def ask(self) -> bool:
        """Ask the next peer for blobs the chain lacks, a request's worth after those asked
        last (so blobs that nobody holds, a device's that were never uploaded, do not keep
        the others from being asked for); False if none are missing or no peer is
        connected."""
        peers = self._peers.peers()
        missing = self._chain.missing_blobs(MAX_BLOBS_PER_REQUEST, self._after)
        if not missing and self._after:  # round again: blobs nobody held may come later
            missing = self._chain.missing_blobs(MAX_BLOBS_PER_REQUEST)
        if not peers or not missing:
            return False
        self._after = missing[-1][0]
        peer = peers[self._turn % len(peers)]
        self._turn += 1
        wanted = [address for address, _ in missing]
        asked = self._asked.setdefault(peer.node_id, set())
        if len(asked) + len(wanted) > ASKED_PER_PEER:
            asked.clear()  # answers that never came
        asked.update(wanted)
        peer.send(GetBlobs(wanted))
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Ask for missing blobs after each commit and every :data:`FETCH_INTERVAL_S` while
        some are missing."""
        task_status.started()
        while True:
            with trio.move_on_after(FETCH_INTERVAL_S):
                await self._wake.wait()
            self._wake = trio.Event()
            self.ask()
            await trio.sleep(FETCH_INTERVAL_S / 4)  # commits come faster than answers
