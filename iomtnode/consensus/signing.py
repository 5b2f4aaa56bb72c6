"""An authority's signing key with its persisted signing state, and the signing lock.

Restart safety (DESIGN.md, "Consensus"): an authority persists what it is about to sign
*before* it signs, so a crash or restart can never make it sign a second, conflicting
proposal or vote at one height, round and step.

- :class:`Signer` keeps the last :class:`~iomtnode.consensus.votes.SigningState` in a
  :class:`MetaStore`: on a node, :class:`SigningStateFile` (``HOME/signing_state``, outside
  ``data/``, so a resync from an empty data directory keeps it; a
  :class:`~iomtnode.consensus.recordfile.RecordFile`: each record one synced write, and a
  crash in the middle of one leaves the previous record). The driver calls
  :meth:`Signer.record` with the machine's signing state after each step that signs;
  :meth:`Signer.vote` and :meth:`Signer.proposal` refuse (:class:`UnrecordedSignatureError`,
  a bug) to sign anything the recorded state would still permit, i.e. anything not
  recorded first, and (:class:`ConflictingSignatureError`) anything at or below what was
  signed but that same message again.
- :class:`SigningLock` is an exclusive ``fcntl.flock`` on ``HOME/signing.lock``
  (:data:`SIGNING_LOCK_FILE`), held while the node may sign. A second process that uses
  the same home (the same key and signing state) cannot take it and refuses to start
  with :class:`SigningLockedError`. The lock is released by the kernel when the process
  dies, so a crash never leaves it stale. It cannot see a copy of the key in another home
  or on another machine: run each authority key in exactly one home.
- An authority that starts with *no* persisted signing state (:attr:`Signer.fresh`)
  signs nothing until :class:`~iomtnode.consensus.fresh.FreshStartGuard` knows a height
  it cannot have signed at.

What happens when the signing state is lost is in :mod:`iomtnode.consensus.fresh`.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Protocol

import structlog
import trio

from ..core import codec
from ..core.crypto import SigningKey
from ..core.vote import NIL, MalformedVoteError, Vote, VoteType, decode_vote, sign_vote
from .recordfile import RecordFile, RecordFileError
from .votes import (
    MAX_SIGNING_STATE_BYTES,
    NO_ROUND,
    Proposal,
    SigningState,
    Step,
    decode_proposal,
    sign_proposal,
    step_of,
)

log = structlog.get_logger(__name__)

META_SIGNING_STATE = "signing_state"
SIGNING_LOCK_FILE = "signing.lock"
SIGNING_STATE_FILE = "signing_state"  # in the home, beside node_key, outside data/
RESUMED_ROUND = 2**32  # a hand-written record closes every round a height will reach
KEPT_SIGNED = 6  # own messages kept in the record: a proposal, prevote, precommit x 2 rounds
KEPT_EARLIER = 8  # and own prevotes for a block of earlier rounds of the height, the newest
MAX_KEPT_BYTES = 512  # one kept message, encoded (a vote or a proposal is about 150)
MAX_RECORD_BYTES = 2 * MAX_SIGNING_STATE_BYTES + (KEPT_SIGNED + KEPT_EARLIER) * (
    MAX_KEPT_BYTES + 16)
VOTE, PROPOSAL = 0, 1  # a kept message's kind


class SigningLockedError(RuntimeError):
    """Another process holds this authority's signing lock (says which file)."""


class SigningStateError(RuntimeError):
    """The persisted signing state is unreadable: the node cannot tell what it signed."""


class UnrecordedSignatureError(RuntimeError):
    """A signature was asked for before the signing state that covers it was persisted."""


class ConflictingSignatureError(RuntimeError):
    """A signature was asked for at or below what this key signed already, and it is not
    that same message again: signing it could equivocate."""


Kept = tuple[int, int, bytes]  # (round, VOTE or PROPOSAL, the signed message's bytes)


def signing_record(public: bytes, state: SigningState, kept: list[Kept] | None = None
                   ) -> bytes:
    """What a home's ``signing_state`` holds: ``[authority key, state]`` (msgpack), so a
    record is never taken for another key's (a key copied into another home), and, when
    ``kept`` is given, the messages this key signed before at the state's height (a
    restart sends them again: :attr:`Signer.signed_before`)."""
    if not kept:
        return codec.encode([public, state.to_bytes()])
    return codec.encode([public, state.to_bytes(), [list(k) for k in kept]])


def resumed_record(public: bytes, above: int) -> bytes:
    """A record written by hand for a key whose record was lost, on the operator's word
    that it signed nothing above height ``above``: every round of ``above`` and below is
    closed (:data:`RESUMED_ROUND`), every higher height open."""
    return signing_record(public, SigningState(above, RESUMED_ROUND, Step.PRECOMMIT, NIL))


def read_signing_record(raw: bytes, public: bytes) -> SigningState | None:
    """The state ``raw`` records for ``public``; None if it is another key's record. A
    bare state (a home from before records named their key) is taken as this key's.
    Raises :class:`SigningStateError` if it does not decode."""
    try:
        value = codec.decode(raw, max_bytes=MAX_RECORD_BYTES)
        if isinstance(value, list) and len(value) in (2, 3):
            owner, state = value[:2]
            if owner != public:
                return None
            if not isinstance(state, bytes):
                raise codec.DecodeError("the recorded state is not bytes")
            raw = state
        return SigningState.from_bytes(raw)
    except (codec.DecodeError, MalformedVoteError) as exc:
        raise SigningStateError(f"the persisted signing state is corrupt ({exc}); "
                                "refusing to sign") from None


def read_kept(raw: bytes, public: bytes) -> list[Kept]:
    """The messages a record of ``public`` keeps (:func:`signing_record`); none if it keeps
    none or is another key's. They only help a restart along, so a malformed list is logged
    and read as none (the state beside it still prevents any conflicting signature)."""
    value = codec.decode(raw, max_bytes=MAX_RECORD_BYTES)  # read_signing_record checked it
    if not (isinstance(value, list) and len(value) == 3 and value[0] == public):
        return []
    kept = value[2]
    if (isinstance(kept, list) and len(kept) <= KEPT_SIGNED + KEPT_EARLIER and all(
            isinstance(k, list) and len(k) == 3 and type(k[0]) is int and k[1] in (VOTE, PROPOSAL)
            and isinstance(k[2], bytes) and len(k[2]) <= MAX_KEPT_BYTES for k in kept)):
        return [(k[0], k[1], k[2]) for k in kept]
    log.error("signed_messages_unreadable", reason="not a list of kept messages")
    return []


def _prevote_for_block(kept: Kept) -> bool:
    if kept[1] != VOTE:
        return False
    try:
        vote = decode_vote(kept[2])
    except MalformedVoteError:
        return False
    return vote.type is VoteType.PREVOTE and vote.block_hash != NIL


class MetaStore(Protocol):
    """What :class:`Signer` needs of the block store: node metadata, written synced."""

    def get_meta(self, name: str) -> bytes | None: ...

    def put_meta(self, name: str, value: bytes) -> None: ...


class SigningStateFile:
    """A :class:`MetaStore` of one file in the node's home, outside ``data/``.

    Wiping the chain data to resync must never make an authority forget what it signed,
    so the signing state does not live in the LevelDB store. The file is a
    :class:`~iomtnode.consensus.recordfile.RecordFile`: each record costs one synced write,
    a crash in the middle of one leaves the previous record, and a file of the older
    format (the record alone) is rewritten in this one when first read. The node keeps
    its consensus write-ahead record in a second file of this kind. The file is opened
    at the first :meth:`get_meta` or :meth:`put_meta` and kept open until :meth:`close`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: RecordFile | None = None  # opened at first use, then kept

    def _opened(self) -> RecordFile:
        if self._file is None:
            try:
                self._file = RecordFile.open(self.path)
            except RecordFileError as exc:
                raise SigningStateError(f"{self.path} is damaged ({exc}); refusing to "
                                        "trust it") from None
        return self._file

    def get_meta(self, name: str) -> bytes | None:
        """The file's record (None if there is none). Raises :class:`SigningStateError` if
        the file holds no whole record."""
        return self._opened().payload

    def put_meta(self, name: str, value: bytes) -> None:
        """Make ``value`` the file's record, synced (:meth:`RecordFile.write`). A damaged
        file (:meth:`get_meta` raised) is replaced whole."""
        try:
            record = self._opened()
        except SigningStateError:
            record = self._file = RecordFile.anew(self.path)
        record.write(value)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class SigningLock:
    """An exclusive, non-blocking ``flock`` on one file; use :meth:`acquire`.

    Resource handling: the file descriptor is held until :meth:`release` (or the end of a
    ``with`` block); the file itself stays (it holds the holder's pid, for the message).
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path) -> SigningLock:
        """Take the lock at ``path`` or raise :class:`SigningLockedError` at once."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise SigningLockedError(
                f"{path} is locked by another process (pid {holder}) signing with this "
                f"authority's key; stop it first: two signers of one key would double-sign"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SigningLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


class Signer:
    """``key``'s signatures for consensus, each one recorded in ``store`` before it is made.

    :attr:`state` is the last persisted :class:`SigningState` (loaded at construction; a
    fresh one if none was ever persisted, and then :attr:`fresh` is True: see
    :class:`FreshStartGuard`). Raises :class:`SigningStateError` if the stored
    one is corrupt: repair or remove it by hand, knowing the key may then double-sign.
    """

    def __init__(self, key: SigningKey, chain_id: str, store: MetaStore) -> None:
        self._key = key
        self._chain_id = chain_id
        self._store = store
        raw = store.get_meta(META_SIGNING_STATE)
        recorded = read_signing_record(raw, key.public) if raw else None
        if raw and recorded is None:
            log.warning("signing_state_of_another_key", authority=key.public.hex()[:16],
                        reason="the home's signing_state names another key: this key's "
                               "record is lost")
        # nothing persisted for this key (`iomtnode init` writes one for the key it
        # makes): its record was lost (a deleted file, the key copied into another
        # home), and it may have signed before, so the driver defers signing
        self.fresh = recorded is None
        self.state = recorded or SigningState()
        # own messages signed at the state's height, kept in the record (what the last
        # record was written before, too, but that one is the state itself)
        self._kept: list[Kept] = read_kept(raw, key.public) if recorded is not None else []
        # the last message signed, as (height, round, step) and block hash: after a
        # restart, what the record says (it was recorded before it was signed)
        self._last = ((self.state.height, self.state.round, self.state.step),
                      self.state.block_hash)

    @property
    def public(self) -> bytes:
        return self._key.public


    def record(self, state: SigningState) -> None:
        """Persist ``state`` (synced) unless it is the one recorded already.

        Raises ValueError if ``state`` is behind the recorded one (a bug: what was signed
        only ever grows)."""
        if state == self.state:
            return
        if (state.height, state.round, state.step) < (
                self.state.height, self.state.round, self.state.step):
            raise ValueError(f"signing state going back from {self.state} to {state}")
        if state.height != self.state.height:
            self._kept = []
        # the last two rounds' messages, and the prevotes for a block of earlier rounds: a
        # lock is given up, or a locked block accepted again, only with a proof of lock (2f+1
        # prevotes of one round), and after a restart of every authority those prevotes
        # exist nowhere else
        window = [k for k in self._kept if k[0] >= state.round - 1]
        earlier = [k for k in self._kept if k[0] < state.round - 1 and _prevote_for_block(k)]
        self._kept = earlier[-KEPT_EARLIER:] + window[-KEPT_SIGNED:]
        self._store.put_meta(META_SIGNING_STATE, signing_record(self.public, state, self._kept))
        self.state = state

    @property
    def signed_before(self) -> list[tuple[int, Vote | Proposal]]:
        """(round, message) of what this key signed at the recorded height before its last
        message, in the order signed (the last and previous rounds, and the prevotes for a
        block of earlier rounds): after a restart the driver sends them again, since peers
        that restarted too have lost them."""
        found: list[tuple[int, Vote | Proposal]] = []
        for round_, kind, raw in self._kept:
            try:
                message = decode_proposal(raw) if kind == PROPOSAL else decode_vote(raw)
            except MalformedVoteError as exc:
                log.error("signed_messages_unreadable", reason=str(exc))
                continue
            if message.height == self.state.height and round_ == message.round:
                found.append((round_, message))
        return found

    def _keep(self, round_: int, kind: int, raw: bytes) -> None:
        if (round_, kind, raw) not in self._kept:
            self._kept.append((round_, kind, raw))

    async def record_aside(self, state: SigningState, *, inline: bool = False) -> None:
        """:meth:`record` in a worker thread when it writes a file: its synced write then
        holds up the caller (which must wait for it) but not the node's other tasks
        (admission, gossip, the API). ``inline``, or a store in memory: on this thread."""
        if isinstance(self._store, SigningStateFile) and not inline:
            await trio.to_thread.run_sync(self.record, state)
        else:
            self.record(state)

    def vote(self, vote_type: VoteType, height: int, round_: int, block_hash: bytes) -> Vote:
        """Sign a vote the recorded state covers (see :meth:`_check`)."""
        self._check(height, round_, step_of(vote_type), block_hash)
        vote = sign_vote(self._key, self._chain_id, vote_type, height, round_, block_hash)
        self._keep(round_, VOTE, vote.encode())
        return vote

    def proposal(self, height: int, round_: int, block_hash: bytes,
                 pol_round: int = NO_ROUND) -> Proposal:
        """Sign a proposal the recorded state covers (see :meth:`_check`)."""
        self._check(height, round_, Step.PROPOSE, block_hash)
        proposal = sign_proposal(self._key, self._chain_id, height, round_, block_hash,
                                 pol_round)
        self._keep(round_, PROPOSAL, proposal.encode())
        return proposal

    def _check(self, height: int, round_: int, step: Step, block_hash: bytes) -> None:
        """The last line of defence against double-signing, whatever the caller does.

        Refuse (:class:`UnrecordedSignatureError`) a message above the recorded
        ``(height, round, step)``: it must be recorded first. Refuse
        (:class:`ConflictingSignatureError`) a message below the last one signed (an
        earlier step, round or height), or at it or at the record with another block: a
        step records one hash. Signing exactly the last message again is allowed (ed25519
        signatures are deterministic: the same bytes, no conflict); so is a message
        between the last signed and the record (one machine step may record several
        messages at once, signed in turn)."""
        at = (height, round_, step)
        recorded = self.state
        where = f"height {height} round {round_} {step.name}"
        if recorded.permits(height, round_, step):
            raise UnrecordedSignatureError(
                f"signing at {where} before recording it "
                f"(recorded: {recorded.height}/{recorded.round}/{recorded.step.name})")
        last_at, last_hash = self._last
        if at < last_at or (at == last_at and block_hash != last_hash) or (
                at == (recorded.height, recorded.round, recorded.step)
                and block_hash != recorded.block_hash):
            raise ConflictingSignatureError(
                f"refusing to sign {block_hash.hex()[:16]} at {where}: this key signed up "
                f"to {last_at[0]}/{last_at[1]}/{last_at[2].name} already "
                f"({last_hash.hex()[:16]} there)")
        self._last = (at, block_hash)
