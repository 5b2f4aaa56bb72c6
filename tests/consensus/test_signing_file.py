"""The signing state file: survives a wiped data directory, written atomically, private."""

from __future__ import annotations

import threading

import trio

from iomtnode.consensus.signing import Signer, SigningStateFile
from iomtnode.consensus.votes import SigningState, Step
from iomtnode.core.crypto import SigningKey, blake2b256
from iomtnode.core.vote import VoteType

KEY = SigningKey(blake2b256(b"A"))


def test_recorded_state_is_reloaded_from_the_home_file(tmp_path):
    path = tmp_path / "signing_state"
    signer = Signer(KEY, "iomt-test", SigningStateFile(path))
    state = SigningState(5, 2, Step.PREVOTE, b"\x07" * 32)
    signer.record(state)
    signer.vote(VoteType.PREVOTE, 5, 2, b"\x07" * 32)
    assert path.stat().st_mode & 0o077 == 0
    assert not path.with_name("signing_state.tmp").exists()
    again = Signer(KEY, "iomt-test", SigningStateFile(path))  # as after a restart
    assert again.state == state
    assert not again.state.permits(5, 2, Step.PREVOTE)


class _ThreadNotingFile(SigningStateFile):
    """The home file, noting which thread each write ran on."""

    def __init__(self, path):
        super().__init__(path)
        self.threads: list[int] = []

    def put_meta(self, name, value):
        self.threads.append(threading.get_ident())
        super().put_meta(name, value)


async def test_persist_writes_the_home_file_from_a_worker_thread(tmp_path):
    # the write waits for two fsyncs: on the trio thread it would stall every other task
    store = _ThreadNotingFile(tmp_path / "signing_state")
    signer = Signer(KEY, "iomt-test", store)
    state = SigningState(3, 0, Step.PROPOSE, b"\x01" * 32)
    with trio.fail_after(10):
        await signer.persist(state)
    assert store.threads and threading.get_ident() not in store.threads
    assert signer.state == state
    assert Signer(KEY, "iomt-test", SigningStateFile(store.path)).state == state


async def test_persist_writes_in_place_to_a_store_that_does_not_wait_for_the_disk():
    written: list[int] = []

    class Meta:
        def get_meta(self, name):
            return None

        def put_meta(self, name, value):
            written.append(threading.get_ident())

    signer = Signer(KEY, "iomt-test", Meta())
    await signer.persist(SigningState(1, 0, Step.PREVOTE, b"\x02" * 32))
    assert written == [threading.get_ident()]
