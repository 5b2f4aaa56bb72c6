"""The signing state file: survives a wiped data directory, written atomically, private."""

from __future__ import annotations

from iomtnode.consensus.signing import Signer, SigningStateFile
from iomtnode.consensus.votes import SigningState, Step
from iomtnode.core.crypto import SigningKey, blake2b256
from iomtnode.core.vote import VoteType
from iomtnode.store.files import temporary_of

KEY = SigningKey(blake2b256(b"A"))


def test_recorded_state_is_reloaded_from_the_home_file(tmp_path):
    path = tmp_path / "signing_state"
    signer = Signer(KEY, "iomt-test", SigningStateFile(path))
    state = SigningState(5, 2, Step.PREVOTE, b"\x07" * 32)
    signer.record(state)
    signer.vote(VoteType.PREVOTE, 5, 2, b"\x07" * 32)
    assert path.stat().st_mode & 0o077 == 0
    assert not temporary_of(path).exists()
    again = Signer(KEY, "iomt-test", SigningStateFile(path))  # as after a restart
    assert again.state == state
    assert not again.state.permits(5, 2, Step.PREVOTE)
