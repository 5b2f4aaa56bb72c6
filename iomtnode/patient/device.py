"""The device library: a device seals each reading to its stream's current epoch, signs it, and
keeps its plaintext until the reading is committed or refused for good (docs/privacy.md,
sections 1 to 3).

- The device learns its stream's epoch from any node (``get_stream_epoch``) and believes it
  only when the announcement is signed by the stream key it was paired with and names an
  epoch no lower than the one it has: a node can delay a device but cannot give it a key of
  its own, nor move it back to an epoch a revoked grantee still holds.
- A refusal for a stale epoch (1024), at submission or later (a reading dropped from a mempool
  when a revocation commits), re-seals the same plaintext to the current epoch and resubmits
  it with the same sequence number: nothing is lost and no sequence number is skipped. A
  reading sent again while its epoch is still current (a node that lost it, a wait) is the
  same transaction: a sequence number carries one content as long as it may commit.
- A refusal for an epoch not announced yet (1025) waits and asks again; one for a full
  mempool (1020) waits and sends the reading again; one for a commitment another reading
  named first (1035) seals the plaintext again with a fresh salt, same sequence number.
- An answer that the node holds the reading already (1008: pending, or in a block; the id
  covers the whole signed body, so it is this reading) is an acceptance: a reading sent again
  after the node said it lost it may have come back meanwhile, in a peer's block or by
  reconciliation. :meth:`DeviceSession.settle` then follows it as any accepted one.
- The next sequence number comes from the ledger (``get_device``'s ``last_seq``), asked once
  the connection has proven the device's key.

Network calls go through an object with :class:`DeviceApi`'s methods
(:class:`iomtnode.client.ApiClient`); the sealing itself is :mod:`.seal`. The simulator keeps
its own fast path (:mod:`iomtnode.sim.vitals`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Protocol

import trio

from iomtnode.core.crypto import BadSignatureError, SigningKey
from iomtnode.core.errors import (
    CommitmentInUseError,
    DuplicateTxError,
    MempoolFullError,
    StaleEpochError,
    UnknownEpochError,
)
from iomtnode.core.payload import INLINE_CLASSES
from iomtnode.core.tx import (
    EpochAnnounce,
    MalformedTxError,
    Reading,
    RevokeGrant,
    SignedTx,
    decode_tx,
    sign_tx,
)

from .plaintext import Plaintext
from .seal import seal_reading

STALE_EPOCH = StaleEpochError.code  # 1024: re-seal to the current epoch, same seq
UNKNOWN_EPOCH = UnknownEpochError.code  # 1025: wait for the epoch, ask again
MEMPOOL_FULL = MempoolFullError.code  # 1020: the node has no room yet: wait, send it again
BLOB_TAKEN = CommitmentInUseError.code  # 1035: another reading named this blob: new salt, same seq
HELD = DuplicateTxError.code  # 1008: the node holds this very reading (pending, or in a block)
EPOCH_WAIT_S = 0.5  # between two questions for an epoch the node does not know yet, or
# two submissions to a node whose mempool was full
RETRIED = (STALE_EPOCH, UNKNOWN_EPOCH, MEMPOOL_FULL, BLOB_TAKEN)  # refusals that are not for good
MAX_ATTEMPTS = 8  # submissions of one reading (first + re-seals and waits) before giving up
STATUS_POLL_S = 0.1  # between two get_tx_status questions while waiting for commits
MAX_STATUS_IDS = 10_000  # ids per get_tx_status call (the API's limit)


class DeviceError(ValueError):
    """What the device cannot go on with: a registration that is not this stream's, an
    announcement that is not the stream's, an epoch that would go down."""


class DeviceApi(Protocol):
    """What the device needs of a node's API (:class:`iomtnode.client.ApiClient`)."""

    async def call(self, method: str, **params: Any) -> Any: ...

    async def authenticate(self, key: SigningKey, chain_id: str | None = None) -> list[str]: ...

    async def submit_binary(self, txs: list[bytes]) -> list[list[Any]]: ...


@dataclass(frozen=True, slots=True)
class Epoch:
    """A stream's epoch as its signed announcement gave it."""

    number: int
    public: bytes  # X_e: what readings of this epoch are sealed to
    announcement: bytes  # the announcement's id


def check_announcement(raw: bytes, stream: bytes, chain_id: str, known: int = 0) -> Epoch:
    """The epoch announced by ``raw`` (an EpochAnnounce or a RevokeGrant, as a node gave it),
    once it is signed by ``stream``'s key on ``chain_id`` and names an epoch no lower than
    ``known``; raises :class:`DeviceError` with the reason otherwise."""
    try:
        tx = decode_tx(raw)
        tx.verify(chain_id)
    except MalformedTxError as exc:
        raise DeviceError(f"the epoch announcement is malformed: {exc}") from None
    except BadSignatureError:
        raise DeviceError("the epoch announcement's signature does not verify") from None
    body = tx.body
    if not isinstance(body, EpochAnnounce | RevokeGrant):
        raise DeviceError(f"a {tx.kind_name} is not an epoch announcement")
    if body.stream != stream:
        raise DeviceError("the epoch announcement is signed by another stream than this "
                          "device's")
    if body.epoch < known:
        raise DeviceError(f"the node offered epoch {body.epoch}, below epoch {known} this "
                          "device already uses: a device never moves to a lower epoch")
    return Epoch(body.epoch, body.public, tx.id)


@dataclass(frozen=True, slots=True)
class Pending:
    """A reading not yet committed: its plaintext is kept to re-seal it."""

    seq: int
    ts_ms: int
    plain: Plaintext
    tx: SignedTx
    blob: bytes = b""  # a class 1 or 2 reading's sealed payload, for the nodes' blob store
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one reading, for good: ``committed`` (at ``height``); ``refused`` at
    admission (``code``, ``reason``: the node never took it); ``dropped``: accepted, then
    dropped by the node (``code``, ``reason``: the rule it came to break); ``lost``: accepted,
    then unknown to the node each time it was sent (code 0)."""

    seq: int
    tx_id: bytes
    state: str
    height: int = 0
    code: int = 0
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seq": self.seq, "id": self.tx_id.hex(), "state": self.state}
        if self.state == "committed":
            out["height"] = self.height
        else:
            out |= {"code": self.code, "reason": self.reason}
        return out


class DeviceSession:
    """One device sending readings into its stream through one API connection. Make it with
    :meth:`open`, which proves the device's key and learns its next sequence number and its
    stream's epoch."""

    def __init__(self, api: DeviceApi, key: SigningKey, stream: bytes, chain_id: str, *,
                 next_seq: int, epoch: Epoch) -> None:
        self._api = api
        self._key = key
        self.stream = stream
        self.chain_id = chain_id
        self.next_seq = next_seq
        self.epoch = epoch
        self._pending: dict[int, Pending] = {}  # seq -> reading sent, not committed yet

    @classmethod
    async def open(cls, api: DeviceApi, key: SigningKey, stream: bytes,
                   chain_id: str) -> DeviceSession:
        """Prove ``key`` on ``api``'s connection, check that the ledger has the device in
        ``stream`` (the stream it was paired with) and active, and learn its epoch (the
        node refuses, 1030, while the stream has none)."""
        await api.authenticate(key, chain_id)
        found = await api.call("get_device", id=key.public.hex())
        if found["stream"] != stream.hex():
            raise DeviceError(f"the ledger has this device in stream {found['stream'][:16]}, "
                              f"not in {stream.hex()[:16]} it was paired with")
        if found["status"] != "active":
            raise DeviceError(f"the device is {found['status']}, not active")
        epoch = await _fetch_epoch(api, stream, chain_id)
        return cls(api, key, stream, chain_id, next_seq=found["last_seq"] + 1, epoch=epoch)

    @property
    def pending(self) -> tuple[Pending, ...]:
        """The readings sent and neither committed nor refused for good yet."""
        return tuple(self._pending.values())

    async def refresh_epoch(self) -> Epoch:
        """Ask the node for the stream's epoch; move to it if it is higher (never lower: a
        node behind the ledger's head may offer an older one, which is ignored)."""
        epoch = await _fetch_epoch(self._api, self.stream, self.chain_id)
        if epoch.number > self.epoch.number:
            self.epoch = epoch
        return self.epoch

    def _sealed(self, seq: int, ts_ms: int, plain: Plaintext) -> tuple[SignedTx, bytes]:
        """The signed reading and, for a class 1 or 2 one, its blob (else b"")."""
        size_class, commitment, sidecar = seal_reading(
            self.chain_id, self.stream, self._key.public, seq, self.epoch.number,
            self.epoch.public, plain)
        body = Reading(self._key.public, seq, ts_ms, self.epoch.number, size_class, commitment)
        inline = size_class in INLINE_CLASSES
        tx = sign_tx(body, self._key, self.chain_id, sidecar if inline else b"")
        return tx, b"" if inline else sidecar

    def seal(self, plain: Plaintext, ts_ms: int | None = None) -> Pending:
        """Seal ``plain`` to the current epoch under the next sequence number; kept as pending
        until :meth:`submit` and :meth:`settle` say what became of it."""
        seq = self.next_seq
        ts = time.time_ns() // 1_000_000 if ts_ms is None else ts_ms
        pending = Pending(seq, ts, plain, *self._sealed(seq, ts, plain))
        self.next_seq += 1
        self._pending[seq] = pending
        return pending

    def _reseal(self, pending: Pending) -> Pending:
        tx, blob = self._sealed(pending.seq, pending.ts_ms, pending.plain)
        again = replace(pending, tx=tx, blob=blob, attempts=pending.attempts + 1)
        self._pending[pending.seq] = again
        return again

    def _again(self, pending: Pending) -> Pending:
        """``pending`` to send once more: re-sealed when the stream's epoch has moved past it,
        else the very same transaction. A sequence number never carries two contents while
        the first may still commit (a node that lost a reading may have relayed it)."""
        body = pending.tx.body
        assert isinstance(body, Reading)
        if body.epoch != self.epoch.number:
            return self._reseal(pending)
        again = replace(pending, attempts=pending.attempts + 1)
        self._pending[pending.seq] = again
        return again

    def _refused(self, pending: Pending, code: int, reason: str, state: str = "refused"
                 ) -> Outcome:
        del self._pending[pending.seq]  # refused for good: its plaintext goes
        return Outcome(pending.seq, pending.tx.id, state, code=code, reason=reason)

    async def submit(self, readings: list[Pending]) -> list[Outcome]:
        """Submit ``readings`` (sealed by :meth:`seal`) until each is accepted or refused for
        good; returns the refusals (accepted readings stay pending: see :meth:`settle`).
        Stale epochs are re-sealed to the current one with the same sequence number."""
        refused: list[Outcome] = []
        todo = list(readings)
        while todo:
            for p in todo:  # a strip's blob goes first: a node takes a reading it can fetch
                if p.blob:
                    await self._api.call("put_blob", blob=p.blob.hex())
            answers = await self._api.submit_binary([p.tx.raw for p in todo])
            retry: list[Pending] = []
            wait = False
            for pending, (code, detail) in zip(todo, answers, strict=True):
                if code in (0, HELD):  # module doc: held already is accepted
                    continue
                if code not in RETRIED or pending.attempts >= MAX_ATTEMPTS:
                    refused.append(self._refused(pending, code, str(detail)))
                    continue
                wait = wait or code not in (STALE_EPOCH, BLOB_TAKEN)
                retry.append(self._reseal(pending) if code == BLOB_TAKEN else pending)
            if retry:
                if wait:
                    await trio.sleep(EPOCH_WAIT_S)
                await self.refresh_epoch()
            todo = [self._again(p) for p in retry]
        return refused

    async def settle(self, timeout_s: float) -> list[Outcome]:
        """Wait (at most ``timeout_s``) until every pending reading is committed or refused for
        good; a reading dropped for a stale epoch (a revocation committed while it waited) is
        re-sealed and resubmitted. Returns every outcome; what is still pending at the
        deadline stays in :attr:`pending`."""
        outcomes: list[Outcome] = []
        with trio.move_on_after(timeout_s):
            while self._pending:
                outcomes += await self._poll()
                if self._pending:
                    await trio.sleep(STATUS_POLL_S)
        return outcomes

    async def _poll(self) -> list[Outcome]:
        outcomes: list[Outcome] = []
        waiting = list(self._pending.values())[:MAX_STATUS_IDS]
        states = await self._api.call("get_tx_status", ids=[p.tx.id.hex() for p in waiting])
        stale: list[Pending] = []
        for pending, status in zip(waiting, states, strict=True):
            if status["state"] == "committed":
                del self._pending[pending.seq]
                outcomes.append(Outcome(pending.seq, pending.tx.id, "committed",
                                        height=status["height"]))
            elif status["state"] == "dropped":
                if status["code"] == BLOB_TAKEN and pending.attempts < MAX_ATTEMPTS:
                    stale.append(self._reseal(pending))  # a fresh salt: a blob of its own
                elif status["code"] == STALE_EPOCH and pending.attempts < MAX_ATTEMPTS:
                    stale.append(pending)
                else:
                    outcomes.append(self._refused(pending, status["code"], status["reason"],
                                                  "dropped"))
            elif status["state"] == "unknown":  # the node lost it (a restart): send it again
                if pending.attempts < MAX_ATTEMPTS:
                    stale.append(pending)
                else:
                    outcomes.append(self._refused(pending, 0, "the node lost it every time",
                                                  "lost"))
        if stale:
            await self.refresh_epoch()
            outcomes += await self.submit([self._again(p) for p in stale])
        return outcomes


async def _fetch_epoch(api: DeviceApi, stream: bytes, chain_id: str) -> Epoch:
    """The stream's epoch from ``get_stream_epoch``, checked. A stream with no epoch yet (1030)
    or erased (1032) is the node's refusal, raised by ``api.call``."""
    answer = await api.call("get_stream_epoch", stream=stream.hex())
    return check_announcement(bytes.fromhex(answer["announcement"]), stream, chain_id)
