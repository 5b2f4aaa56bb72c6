"""The signing state reaches the disk before the signature is made: the state file's new
record is fdatasynced (or, when the file is made, the file and its directory fsynced, in
order; spies on ``os.fsync`` and ``os.fdatasync``) before the key signs. A SIGKILL test
cannot see a missing fsync (the page cache survives the process); a power cut can.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from iomtnode.consensus import recordfile, signing
from iomtnode.consensus.signing import Signer, SigningStateFile
from iomtnode.consensus.votes import SigningState, Step, step_of
from iomtnode.core.vote import VoteType
from iomtnode.store.files import temporary_of

from ..core.helpers import CHAIN_ID, key, pub
from .harness import cluster, wait_heights, wait_until

Event = tuple[Any, ...]


class HomeFiles(SigningStateFile):
    """A home's signing state in its file (what is spied on); its consensus write-ahead
    record, another file of the home, kept in memory here."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.other: dict[str, bytes] = {}

    def get_meta(self, name: str) -> bytes | None:
        if name == signing.META_SIGNING_STATE:
            return super().get_meta(name)
        return self.other.get(name)

    def put_meta(self, name: str, value: bytes) -> None:
        if name == signing.META_SIGNING_STATE:
            super().put_meta(name, value)
        else:
            self.other[name] = value


def newest(raw: bytes) -> bytes:
    """The record a state file's bytes hold (the newest whole slot)."""
    return recordfile.read_slots(raw)[3]


class DiskSpy:
    """Records, in order, each fsync of the state file being made (with the record it held),
    each rename onto it, each fsync of its directory and each fdatasync of the file (with
    the record the file then held), and each signature made with ``signer``'s key (what it
    signed)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: Path, signer: bytes) -> None:
        self.path = path
        self.tmp = temporary_of(path)
        self.signer = signer
        self.events: list[Event] = []
        real_fsync, real_fdatasync, real_replace = os.fsync, os.fdatasync, os.replace
        real_vote, real_proposal = signing.sign_vote, signing.sign_proposal

        def fsync(fd: int) -> None:
            real_fsync(fd)
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode) and info.st_ino == os.stat(path.parent).st_ino:
                self.events.append(("fsync dir", newest(path.read_bytes())))
            elif self.tmp.exists() and info.st_ino == os.stat(self.tmp).st_ino:
                self.events.append(("fsync file", newest(self.tmp.read_bytes())))

        def fdatasync(fd: int) -> None:
            real_fdatasync(fd)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                self.events.append(("fdatasync", newest(path.read_bytes())))

        def replace(src: Any, dst: Any) -> None:
            real_replace(src, dst)
            if Path(dst) == path:
                self.events.append(("rename", Path(src).name))

        def sign_vote(k: Any, chain_id: str, vote_type: VoteType, height: int, round_: int,
                      block_hash: bytes) -> Any:
            if k.public == signer:
                self.events.append(("sign", height, round_, step_of(vote_type)))
            return real_vote(k, chain_id, vote_type, height, round_, block_hash)

        def sign_proposal(k: Any, chain_id: str, height: int, round_: int, *rest: Any) -> Any:
            if k.public == signer:
                self.events.append(("sign", height, round_, Step.PROPOSE))
            return real_proposal(k, chain_id, height, round_, *rest)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(signing, "sign_vote", sign_vote)
        monkeypatch.setattr(signing, "sign_proposal", sign_proposal)

    def unsynced_signatures(self) -> list[Event]:
        """Signatures made while the durable state (fdatasynced in the file, or fsynced as
        a new file, renamed into place, the directory fsynced) still permitted them: each
        would be signed again after a power cut."""
        file_synced: set[bytes] = set()
        renamed = False
        durable = SigningState()
        bad = []
        for event in self.events:
            match event:
                case ("fsync file", raw):
                    file_synced.add(raw)
                    renamed = False
                case ("rename", _):
                    renamed = True
                case ("fsync dir", raw) if renamed and raw in file_synced:
                    durable = signing.read_signing_record(raw, self.signer) or SigningState()
                case ("fdatasync", raw):
                    durable = signing.read_signing_record(raw, self.signer) or SigningState()
                case ("sign", height, round_, step) if durable.permits(height, round_, step):
                    bad.append(event)
        return bad


def test_a_recorded_state_is_fsynced_file_then_directory_before_the_signature(
        tmp_path, monkeypatch) -> None:
    """The first record makes the file (fsync, rename, directory fsync); each later one is
    one fdatasync of the file; each before the signature it permits."""
    path = tmp_path / "signing_state"
    spy = DiskSpy(monkeypatch, path, pub("A"))
    signer = Signer(key("A"), CHAIN_ID, SigningStateFile(path))
    state = SigningState(5, 2, Step.PREVOTE, b"\x07" * 32)
    signer.record(state)
    prevote = signer.vote(VoteType.PREVOTE, 5, 2, b"\x07" * 32)
    later = SigningState(5, 2, Step.PRECOMMIT, b"\x07" * 32, 2, b"\x07" * 32, 2, b"\x07" * 32)
    signer.record(later)
    signer.vote(VoteType.PRECOMMIT, 5, 2, b"\x07" * 32)
    raw = signing.signing_record(pub("A"), state)
    # the later record keeps the prevote signed before it (a restart sends it again)
    raw_later = signing.signing_record(pub("A"), later, [(2, signing.VOTE, prevote.encode())])
    assert spy.events == [("fsync file", raw), ("rename", spy.tmp.name),
                          ("fsync dir", raw), ("sign", 5, 2, Step.PREVOTE),
                          ("fdatasync", raw_later), ("sign", 5, 2, Step.PRECOMMIT)]
    assert spy.unsynced_signatures() == []


async def test_every_signature_of_a_running_authority_follows_its_synced_state(
        tmp_path, autojump_clock, monkeypatch) -> None:
    """Four authorities finalize three heights and more until A signed six messages; A
    keeps its signing state in a home file (as a node does, written in a worker thread, so
    the three others may decide a height before A's precommit) and every proposal and vote
    it signs is covered by a state already durable on disk."""
    path = tmp_path / "A-home" / "signing_state"
    path.parent.mkdir()
    SigningStateFile(path).put_meta(signing.META_SIGNING_STATE, SigningState().to_bytes())
    spy = DiskSpy(monkeypatch, path, pub("A"))
    async with cluster(tmp_path, signed_before=True) as net:
        a = net["A"]
        a.meta = a.network.meta = HomeFiles(path)  # type: ignore[assignment]
        await net.start()
        await wait_heights(net.nodes.values(), 3)
        await wait_until(lambda: sum(e[0] == "sign" for e in spy.events) >= 6)
    signed = [e for e in spy.events if e[0] == "sign"]
    assert len(signed) >= 6
    assert spy.unsynced_signatures() == []
