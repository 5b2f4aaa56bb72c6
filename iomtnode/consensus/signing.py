"""An authority's signing key with its persisted signing state, and the signing lock.

Restart safety (DESIGN.md, "Consensus"): an authority persists what it is about to sign
*before* it signs, so a crash or restart can never make it sign a second, conflicting
proposal or vote at one height, round and step.

- :class:`Signer` keeps the last :class:`~iomtnode.consensus.votes.SigningState` in a
  :class:`MetaStore`: on a node, :class:`SigningStateFile` (``HOME/signing_state``, outside
  ``data/``, so a resync from an empty data directory keeps it; written atomically and
  fsynced). The driver calls :meth:`Signer.record` with the machine's signing state
  after each step that signs; :meth:`Signer.vote` and :meth:`Signer.proposal` refuse
  (:class:`UnrecordedSignatureError`, a bug) to sign anything the recorded state would
  still permit, i.e. anything not recorded first.
- :class:`SigningLock` is an exclusive ``fcntl.flock`` on ``HOME/signing.lock``
  (:data:`SIGNING_LOCK_FILE`), held while the node may sign. A second process that uses
  the same home (the same key and signing state) cannot take it and refuses to start
  with :class:`SigningLockedError`. The lock is released by the kernel when the process
  dies, so a crash never leaves it stale. It cannot see a copy of the key in another home
  or on another machine: run each authority key in exactly one home.
- :class:`FreshStartGuard`: an authority that starts with *no* persisted signing state
  (:attr:`Signer.fresh`) signs nothing until it knows a height it cannot have signed at.

A lost signing state
--------------------

A signer with nothing persisted cannot tell a new authority from one whose state was lost:
a new home holding the same key, or a deleted ``signing_state`` file. The lost state may
cover heights and rounds the network is still deciding, and signing there again could
conflict with what the key signed before. So the driver keeps such an authority an
observer (it checks, relays and commits, signs nothing) until :class:`FreshStartGuard`
has fixed a *floor*, and then lets it sign only at heights above the floor. Call the
process that signed before and forgot *O*. The floor is ``K + 2``, where ``K`` is the
highest finalized height this process has heard of, because:

1. The driver signs at height ``h`` only when its chain holds block ``h - 1`` with its
   commit certificate. So O signed at heights ``<= F + 1``, ``F`` the highest block O
   knew to be final.
2. Block ``F`` is certified by a quorum, ``2f + 1`` of ``n = 3f + 1`` authorities, whose
   precommits were all at height ``F``. Those authorities were at height ``F`` or above
   before O stopped, so before this process started, and heights never go down.
3. Counting this authority's lost memory as one of the ``f`` faults the network
   tolerates, at most ``f - 1`` other authorities are faulty, so at least
   ``(2f + 1) - 1 - (f - 1) = f + 1`` of those precommitters are honest others, now at
   height ``F`` or above: they send consensus messages at heights ``>= F`` and report
   heads ``>= F - 1``.
4. Having heard from ``quorum - 1 = 2f`` of the ``3f`` other authorities, this process
   heard from at least one of those ``f + 1`` (``2f + f + 1 > 3f``). Whatever it heard
   from that one gives ``K >= F - 1``: a message at height ``h`` says ``h - 1`` is final,
   a head is final. So O signed at heights ``<= F + 1 <= K + 2``, the floor. (For other
   ``n`` the counting is the same with the quorum ``floor(2n/3) + 1``: ``2q > n + f``.)

``K`` is the largest of: this node's own head; the heads that authorities' nodes report
(their node id is their authority key, proven by the p2p handshake); ``h - 1`` for each
signature-checked consensus message of another authority at height ``h``. Only messages at
the driver's height or the next one are checked, so no authority can push ``K`` further
than that with messages; one lying about its head can only delay this authority's
signing (a liveness cost, and that takes a second fault), never make it sign twice.

The guard fixes the floor once ``grace_s`` has passed since the start (so that the
messages of heights in progress have arrived: an undecided height's messages are resent
every ``resend_interval_s``) *and*, when the driver sees peers' heads, once it has heard
from ``quorum - 1`` other authorities. Messages after that are ordinary traffic. Heights
up to the floor are decided by the others (``2f + 1`` of them are enough with this one
out); an authority that catches up quickly skips about two heights.

A weaker fallback: a node that sees its peers' heads but does not hear from
``quorum - 1`` authorities (they reach it only through followers) fixes the floor after
:data:`FALLBACK_GRACES` grace periods, once it has peers and holds every block they
report; else, at a new network's start, such authorities would wait for each other for
ever. It then relies on its peers being up to date (logged: ``quorum_heard=False``).

With fewer than four authorities ``f`` is 0 and step 3 cannot count the lost state as a
fault, but the count still holds: ``quorum - 1 = n - 1``, so this process heard from
every other authority, the precommitters of ``F`` among them. With one authority there
is nobody to hear from (its followers' heads are no proof: it might have signed a block
they have not received), so a lone authority without signing state never signs again
(``signing_refused`` in the log): restore ``signing_state`` from a backup.

There is no exception for a new network: ``iomtnode init`` writes the initial signing
state (nothing signed) of the key it makes, so a home without one has lost it, always,
and the floor is ``K + 2`` even when ``K`` is 0. The record names its key
(:func:`signing_record`): a key copied into a home made for another key finds no record
of its own, and defers like any other that lost its state.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Protocol

import structlog

from ..core import codec
from ..core.block import quorum
from ..core.crypto import SigningKey
from ..core.vote import MalformedVoteError, Vote, VoteType, sign_vote
from .votes import (
    MAX_SIGNING_STATE_BYTES,
    NO_ROUND,
    Proposal,
    SigningState,
    Step,
    sign_proposal,
    step_of,
)

log = structlog.get_logger(__name__)

META_SIGNING_STATE = "signing_state"
SIGNING_LOCK_FILE = "signing.lock"
SIGNING_STATE_FILE = "signing_state"  # in the home, beside node_key, outside data/
FALLBACK_GRACES = 10  # grace periods after which a fresh signer settles for its peers' view


class SigningLockedError(RuntimeError):
    """Another process holds this authority's signing lock (says which file)."""


class SigningStateError(RuntimeError):
    """The persisted signing state is unreadable: the node cannot tell what it signed."""


class UnrecordedSignatureError(RuntimeError):
    """A signature was asked for before the signing state that covers it was persisted."""


class ConflictingSignatureError(RuntimeError):
    """A signature was asked for at or below what this key signed already, and it is not
    that same message again: signing it could equivocate."""


def signing_record(public: bytes, state: SigningState) -> bytes:
    """What a home's ``signing_state`` holds: ``[authority key, state]`` (msgpack), so a
    record is never taken for another key's (a key copied into another home)."""
    return codec.encode([public, state.to_bytes()])


def read_signing_record(raw: bytes, public: bytes) -> SigningState | None:
    """The state ``raw`` records for ``public``; None if it is another key's record. A
    bare state (a home from before records named their key) is taken as this key's.
    Raises :class:`SigningStateError` if it does not decode."""
    try:
        value = codec.decode(raw, max_bytes=2 * MAX_SIGNING_STATE_BYTES)
        if isinstance(value, list) and len(value) == 2:
            owner, state = value
            if owner != public:
                return None
            if not isinstance(state, bytes):
                raise codec.DecodeError("the recorded state is not bytes")
            raw = state
        return SigningState.from_bytes(raw)
    except (codec.DecodeError, MalformedVoteError) as exc:
        raise SigningStateError(f"the persisted signing state is corrupt ({exc}); "
                                "refusing to sign") from None


class MetaStore(Protocol):
    """What :class:`Signer` needs of the block store: node metadata, written synced."""

    def get_meta(self, name: str) -> bytes | None: ...

    def put_meta(self, name: str, value: bytes) -> None: ...


class SigningStateFile:
    """A :class:`MetaStore` of one file in the node's home, outside ``data/``.

    Wiping the chain data to resync must never make an authority forget what it signed,
    so the signing state does not live in the LevelDB store. Writes are atomic (write a
    temporary file, fsync, rename, fsync the directory).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def get_meta(self, name: str) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def put_meta(self, name: str, value: bytes) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, value)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


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
        self._store.put_meta(META_SIGNING_STATE, signing_record(self.public, state))
        self.state = state

    def vote(self, vote_type: VoteType, height: int, round_: int, block_hash: bytes) -> Vote:
        """Sign a vote the recorded state covers (see :meth:`_check`)."""
        self._check(height, round_, step_of(vote_type), block_hash)
        return sign_vote(self._key, self._chain_id, vote_type, height, round_, block_hash)

    def proposal(self, height: int, round_: int, block_hash: bytes,
                 pol_round: int = NO_ROUND) -> Proposal:
        """Sign a proposal the recorded state covers (see :meth:`_check`)."""
        self._check(height, round_, Step.PROPOSE, block_hash)
        return sign_proposal(self._key, self._chain_id, height, round_, block_hash, pol_round)

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


class FreshStartGuard:
    """When an authority without persisted signing state may sign (module doc).

    Feed it what the node learns (:meth:`saw_own_head`, :meth:`saw_heads`,
    :meth:`saw_message`) until :meth:`resolve` fixes :attr:`floor`; from then on it
    :meth:`permits` signing at heights above the floor, and ignores further input. Times
    are the caller's clock, in seconds.
    """

    def __init__(self, own: bytes, started_at: float, grace_s: float) -> None:
        if grace_s < 0:
            raise ValueError("the grace period cannot be negative")
        self.own = own
        self.grace_until = started_at + grace_s
        self.fallback_at = started_at + FALLBACK_GRACES * grace_s
        self.floor: int | None = None  # never sign at or below this height
        self.finalized = 0  # K: the highest finalized height heard of
        self.heard: set[bytes] = set()  # other authorities heard from (head or message)
        self._resumed = False
        self._refused = False

    @property
    def resolved(self) -> bool:
        return self.floor is not None

    def saw_own_head(self, height: int) -> None:
        """This node's chain holds blocks up to ``height``."""
        if self.floor is None:
            self.finalized = max(self.finalized, height)

    def saw_heads(self, heads: Mapping[bytes, int], authorities: Iterable[bytes]) -> None:
        """Peers reported these heads (peer id -> height); only authorities' count."""
        if self.floor is None:
            members = set(authorities)
            for peer, head in heads.items():
                if peer in members and peer != self.own:
                    self.heard.add(peer)
                    self.finalized = max(self.finalized, head)

    def saw_message(self, authority: bytes, height: int) -> None:
        """A consensus message of ``authority`` at ``height``, its signature checked."""
        if self.floor is None and authority != self.own:
            self.heard.add(authority)
            self.finalized = max(self.finalized, height - 1)

    def update(self, now: float, own_head: int, heads: Mapping[bytes, int] | None,
               authorities: tuple[bytes, ...], *, height: int) -> bool:
        """Take what the node knows now (its head, its peers' heads if it sees them, the
        authorities of ``height``, the height it is at) and fix the floor if it can: after
        the grace period, having heard from ``quorum - 1`` other authorities when it sees
        heads. True if the floor was fixed by this call (logged)."""
        if self.floor is not None:
            return False
        if self.own in authorities and len(authorities) == 1:
            if not self._refused:  # module doc: the one authority has nobody to ask
                self._refused = True
                log.error("signing_refused", authority=self.own.hex()[:16],
                          reason="the only authority has no signing state, and no other "
                                 "authority can tell what it signed",
                          remedy="restore HOME/signing_state from a backup (see "
                                 "docs/consensus.md, 'A home without signing state')")
            return False
        self.saw_own_head(own_head)
        if heads is not None:
            self.saw_heads(heads, authorities)
        need = quorum(len(authorities)) - 1 if heads is not None else 0
        fallback = (heads is not None and bool(heads) and now >= self.fallback_at
                    and own_head >= max(heads.values()))  # module doc: a weaker fallback
        if not self.resolve(now, 0 if fallback else need):
            return False
        assert self.floor is not None
        if self.own in authorities and not self.permits(height):
            log.warning("signing_deferred", phase="floor", floor=self.floor,
                        until_height=self.floor + 1, finalized_heard=self.finalized,
                        authorities_heard=len(self.heard),
                        quorum_heard=len(self.heard) >= need,
                        reason="this key may have signed up to the height after the "
                               "highest finalized one heard of")
        return True

    def resumed(self, height: int, reason: str = "above the floor") -> None:
        """Log, once, that the authority signs again from ``height``."""
        if not self._resumed:
            self._resumed = True
            log.info("signing_resumed", height=height, floor=self.floor, reason=reason)

    def resolve(self, now: float, need_heard: int) -> bool:
        """Fix the floor if the grace period is over and ``need_heard`` other authorities were
        heard from; True once the floor is fixed."""
        if self.floor is None and now >= self.grace_until and len(self.heard) >= need_heard:
            self.floor = self.finalized + 2
        return self.floor is not None

    def permits(self, height: int) -> bool:
        """Whether signing at ``height`` cannot conflict with what the key signed before."""
        return self.floor is not None and height > self.floor
