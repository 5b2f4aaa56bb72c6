"""What the client API needs of a node, and nothing more: narrow interfaces that services
implement (or thin views over them, built where the node is composed), given to
:class:`~iomtnode.api.methods.ClientApi` at construction.

- :class:`Submitter`: admit a client's transactions (one, or a batch in order).
- :class:`ChainQueries`: committed blocks, certificates, receipts, devices, authorities and
  evidence (the chain); :class:`TxStatusQueries`: what became of an accepted transaction
  (admission); :class:`BlockSubscriptions`: a channel of the blocks committed from now on
  (the commit feed), given to :class:`~iomtnode.api.subscriptions.SubscriptionsApi`.
- :class:`PeerAdmin`: the connected peers and the operator's levers over them.
- :class:`MethodGroup`: more methods with their roles (a patient's records, the audit log).
- :class:`StatusSource`: the figures of every service at one moment, as one frozen
  :class:`NodeStatus` composed of each service's own ``stats()`` record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from ..admission.inbox import Admitted
from ..admission.service import AdmissionStats
from ..chain.chain import ChainStats
from ..consensus.settings import ConsensusStats
from ..core.block import Block, Commit
from ..core.ledger import Device
from ..core.tx import SignedTx
from ..metrics import NodeStats
from ..p2p.records import PeerRecord
from ..p2p.stats import P2PStats
from ..sync.progress import SyncStats
from .access import Role
from .jsonrpc import Refused


class Submitter(Protocol):
    async def submit(self, raw: bytes, *, reading_only: bool = False) -> SignedTx:
        """Admit one transaction from untrusted bytes, keep it and spread it; raises the
        precise :class:`RuleError` on refusal. With ``reading_only`` only a reading."""
        ...

    async def submit_many(self, raws: Sequence[bytes], *, reading_only: bool = False
                          ) -> list[Admitted]:
        """Admit a batch in order; per transaction the admitted one or its RuleError."""
        ...


class ChainQueries(Protocol):
    @property
    def chain_id(self) -> str:
        """The chain's id (what client signatures are made on)."""
        ...

    def authorities(self) -> tuple[bytes, ...]:
        """The chain's current authorities."""
        ...

    def block_parts_at(self, height: int) -> tuple[bytes, list[bytes]]:
        """The header bytes and raw transactions of the committed block at ``height``, not
        decoded; KeyError (with a message) if there is none."""
        ...

    def height_of(self, block_hash: bytes) -> int:
        """The height of the committed block with this hash; KeyError (with a message) if
        there is none."""
        ...

    def commit_at(self, height: int) -> Commit | None:
        """The commit certificate of the block at ``height``, once it is stored."""
        ...

    def receipt(self, tx_id: bytes) -> dict[str, Any] | None:
        """The receipt of a committed transaction; None if it is not committed."""
        ...

    def device(self, key: bytes) -> tuple[Device, int] | None:
        """A device's registration and the sequence number of its last committed reading."""
        ...

    def put_blob(self, blob: bytes, now_ms: int) -> bytes:
        """Keep an uploaded blob for a reading not committed yet; -> its commitment. Raises
        :class:`~iomtnode.chain.streamstore.BlobError` (wrong size, no room)."""
        ...

    def participant(self, key: bytes) -> bool:
        """Whether the ledger knows ``key``: an authority, an active device or the patient
        of one (such a client is not rate limited once it has proven the key)."""
        ...

    def authority_report(self) -> dict[str, Any]:
        """The authorities, scheduled changes and votes not yet passed."""
        ...

    def evidence(self) -> list[dict[str, Any]]:
        """Every equivocation on the ledger."""
        ...

    def known_stream(self, key: bytes) -> bool:
        """Whether the ledger knows ``key`` as a stream (a patient's scope)."""
        ...


class MethodGroup(Protocol):
    """More client methods, each with its role (:mod:`.records`, :mod:`.auditapi`)."""

    @property
    def roles(self) -> Mapping[str, Role]: ...

    def methods(self) -> dict[str, Callable[..., Awaitable[Any]]]: ...


class TxStatusQueries(Protocol):
    def tx_status(self, tx_id: bytes) -> dict[str, Any]:
        """``{id, state, ...}``: committed, pending, dropped or unknown."""
        ...


class BlockSubscriptions(Protocol):
    @property
    def height(self) -> int:
        """The height of the last block told to subscribers (stored, as every one below)."""
        ...

    def subscribe(self) -> trio.MemoryReceiveChannel[Block]:
        """Every block committed from now on; closed when the reader falls behind."""
        ...


class PeerAdmin(Protocol):
    def stats(self) -> P2PStats:
        """The connected peers, refused node ids and traffic, now."""
        ...

    def address_book(self) -> Mapping[bytes, PeerRecord]:
        """The newest signed record known of each node id."""
        ...

    def disconnect(self, node_id: bytes, reason: str) -> bool:
        """Close the connection to a peer (it may reconnect); False if not connected."""
        ...

    def ban(self, node_id: bytes, seconds: float, reason: str) -> None:
        """Disconnect a peer and refuse it for ``seconds``."""
        ...

    def set_refused(self, node_ids: set[bytes]) -> None:
        """Refuse exactly these node ids from now on; disconnect those connected."""
        ...

    async def move(self, address: str) -> str:
        """Listen at ``address`` (HOST:PORT) instead; returns the address bound. Raises
        OSError when it cannot listen there."""
        ...


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """Every service's figures at one moment: what ``status`` shows."""

    node_id: bytes
    version: str
    chain: ChainStats
    admission: AdmissionStats
    p2p: P2PStats
    sync: SyncStats
    consensus: ConsensusStats
    node: NodeStats


class StatusSource(Protocol):
    def status(self) -> NodeStatus:
        """The figures now (synchronous: no other task runs while they are read)."""
        ...


class Refusing(Protocol):
    """A connection as ``submit_readings`` sees it: what its refusals are told to."""

    @property
    def refused(self) -> Refused | None: ...
