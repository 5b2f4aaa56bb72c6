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
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Protocol

import structlog

from ..core.crypto import SigningKey
from .votes import (
    NO_ROUND,
    MalformedVoteError,
    Proposal,
    SigningState,
    Step,
    Vote,
    VoteType,
    sign_proposal,
    sign_vote,
    step_of,
)

log = structlog.get_logger(__name__)

META_SIGNING_STATE = "signing_state"
SIGNING_LOCK_FILE = "signing.lock"
SIGNING_STATE_FILE = "signing_state"  # in the home, beside node_key, outside data/


class SigningLockedError(RuntimeError):
    """Another process holds this authority's signing lock (says which file)."""


class SigningStateError(RuntimeError):
    """The persisted signing state is unreadable: the node cannot tell what it signed."""


class UnrecordedSignatureError(RuntimeError):
    """A signature was asked for before the signing state that covers it was persisted."""


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
    fresh one if none was ever persisted). Raises :class:`SigningStateError` if the stored
    one is corrupt: repair or remove it by hand, knowing the key may then double-sign.
    """

    def __init__(self, key: SigningKey, chain_id: str, store: MetaStore) -> None:
        self._key = key
        self._chain_id = chain_id
        self._store = store
        raw = store.get_meta(META_SIGNING_STATE)
        try:
            self.state = SigningState.from_bytes(raw) if raw else SigningState()
        except MalformedVoteError as exc:
            raise SigningStateError(f"the persisted signing state is corrupt ({exc}); "
                                    "refusing to sign") from None

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
        self._store.put_meta(META_SIGNING_STATE, state.to_bytes())
        self.state = state

    def vote(self, vote_type: VoteType, height: int, round_: int, block_hash: bytes) -> Vote:
        """Sign a vote the recorded state covers."""
        self._check_recorded(height, round_, step_of(vote_type))
        return sign_vote(self._key, self._chain_id, vote_type, height, round_, block_hash)

    def proposal(self, height: int, round_: int, block_hash: bytes,
                 pol_round: int = NO_ROUND) -> Proposal:
        """Sign a proposal the recorded state covers."""
        self._check_recorded(height, round_, Step.PROPOSE)
        return sign_proposal(self._key, self._chain_id, height, round_, block_hash, pol_round)

    def _check_recorded(self, height: int, round_: int, step: Step) -> None:
        if self.state.permits(height, round_, step):
            raise UnrecordedSignatureError(
                f"signing at height {height} round {round_} {step.name} before recording it "
                f"(recorded: {self.state.height}/{self.state.round}/{self.state.step.name})")
