"""Wrapping epoch keys for grantees, and what a reader's keyring can and cannot open."""

from __future__ import annotations

import pytest

from iomtnode.core import codec
from iomtnode.core.txkinds import MAX_WRAPPED_KEY_BYTES
from iomtnode.patient.keyring import Keyring
from iomtnode.patient.keys import (
    EPOCHS_PER_STREAM,
    GranteeKeys,
    derive_stream,
    epoch_keypair,
    epoch_state,
)
from iomtnode.patient.plaintext import HEART_RATE, Plaintext
from iomtnode.patient.seal import OpenError, seal_reading
from iomtnode.patient.wraps import (
    FORWARD,
    HISTORY,
    WrapError,
    epoch_wraps,
    grant_wrap,
    make_wrap,
    open_wrap,
    wrap_hash,
    wraps_hash,
)

ROOT = bytes(range(32))
CHAIN = "iomt-test"
STREAM = derive_stream(ROOT, CHAIN, "vitals").public
OTHER_STREAM = derive_stream(ROOT, CHAIN, "ecg").public
ALICE = GranteeKeys.generate()  # a grantee


def x(epoch: int, stream: bytes = STREAM) -> bytes:
    return epoch_keypair(epoch_state(ROOT, stream, epoch))[0]


def keyring_with(*wraps: tuple[int, int]) -> Keyring:
    """ALICE's keyring given a wrap of each (epoch, mode)."""
    return Keyring.for_grantee(ALICE, [
        (STREAM, epoch, mode, grant_wrap(ROOT, STREAM, epoch, mode, ALICE.box_public))
        for epoch, mode in wraps])


def test_a_wrap_round_trips_and_fits_the_ledger_limit():
    for mode, secret in ((FORWARD, x(3)), (HISTORY, epoch_state(ROOT, STREAM, 3))):
        wrap = make_wrap(STREAM, 3, mode, secret, ALICE.box_public)
        assert open_wrap(wrap, ALICE.box_secret, ALICE.box_public, stream=STREAM, epoch=3,
                         mode=mode) == secret
    largest = make_wrap(STREAM, EPOCHS_PER_STREAM, HISTORY, bytes(32), ALICE.box_public)
    assert len(largest) == 123 <= MAX_WRAPPED_KEY_BYTES


@pytest.mark.parametrize("fields", [
    dict(stream=OTHER_STREAM, epoch=3, mode=FORWARD),
    dict(stream=STREAM, epoch=4, mode=FORWARD),
    dict(stream=STREAM, epoch=3, mode=HISTORY),
])
def test_a_wrap_naming_other_fields_is_refused(fields):
    wrap = grant_wrap(ROOT, STREAM, 3, FORWARD, ALICE.box_public)
    with pytest.raises(WrapError, match="the wrap is"):
        open_wrap(wrap, ALICE.box_secret, ALICE.box_public, **fields)


def test_a_wrap_for_another_box_key_or_tampered_is_refused():
    bob = GranteeKeys.generate()
    wrap = grant_wrap(ROOT, STREAM, 3, FORWARD, ALICE.box_public)
    with pytest.raises(WrapError, match="does not open"):
        open_wrap(wrap, bob.box_secret, bob.box_public, stream=STREAM, epoch=3, mode=FORWARD)
    tampered = wrap[:-1] + bytes([wrap[-1] ^ 1])
    with pytest.raises(WrapError, match="does not open"):
        open_wrap(tampered, ALICE.box_secret, ALICE.box_public, stream=STREAM, epoch=3,
                  mode=FORWARD)
    with pytest.raises(WrapError, match="bytes"):
        open_wrap(wrap + bytes(10), ALICE.box_secret, ALICE.box_public, stream=STREAM,
                  epoch=3, mode=FORWARD)


def test_wrap_hashes_are_domain_separated_and_ordered():
    import hashlib
    wrap = grant_wrap(ROOT, STREAM, 1, FORWARD, ALICE.box_public)
    assert wrap_hash(wrap) == hashlib.blake2b(b"iomt/wrap/v1\x00" + wrap,
                                              digest_size=32).digest()
    pairs = [(b"a" * 32, b"w1"), (b"b" * 32, b"w2")]
    assert wraps_hash(pairs) == hashlib.blake2b(
        b"iomt/wraps/v1\x00" + codec.encode([[g, w] for g, w in pairs]),
        digest_size=32).digest()
    with pytest.raises(WrapError, match="ascending"):
        wraps_hash(pairs[::-1])
    with pytest.raises(WrapError, match="ascending"):
        wraps_hash([pairs[0], pairs[0]])


def test_epoch_wraps_give_each_grantee_its_mode_in_ascending_order():
    grantees = [GranteeKeys.generate() for _ in range(3)]
    modes = [FORWARD, HISTORY, FORWARD]
    listed = [(g.grantee, g.box_public, m) for g, m in zip(grantees, modes, strict=True)]
    pairs = epoch_wraps(ROOT, STREAM, 7, listed)
    assert [g for g, _ in pairs] == sorted(g.grantee for g in grantees)
    wraps_hash(pairs)  # ascending: accepted
    for grantee, mode in zip(grantees, modes, strict=True):
        wrap = dict(pairs)[grantee.grantee]
        secret = open_wrap(wrap, grantee.box_secret, grantee.box_public, stream=STREAM,
                           epoch=7, mode=mode)
        assert secret == (x(7) if mode == FORWARD else epoch_state(ROOT, STREAM, 7))
    with pytest.raises(WrapError, match="twice"):
        epoch_wraps(ROOT, STREAM, 7, [listed[0], listed[0]])


def test_a_forward_wrap_gives_its_epoch_alone():
    ring = keyring_with((3, FORWARD))
    assert ring.secret_for(STREAM, 3) == x(3)
    assert ring.secret_for(STREAM, 4) is None
    assert ring.secret_for(STREAM, 2) is None
    assert ring.secret_for(OTHER_STREAM, 3) is None


def test_a_history_wrap_gives_every_earlier_epoch_and_no_later():
    ring = keyring_with((5, HISTORY))
    assert [ring.secret_for(STREAM, e) for e in range(1, 6)] == [x(e) for e in range(1, 6)]
    assert ring.secret_for(STREAM, 6) is None
    assert ring.secret_for(OTHER_STREAM, 5) is None


def test_wraps_combine_and_an_older_history_wrap_does_not_shrink_a_newer():
    ring = keyring_with((5, HISTORY), (2, HISTORY), (8, FORWARD))
    assert ring.secret_for(STREAM, 5) == x(5)
    assert ring.secret_for(STREAM, 7) is None
    assert ring.secret_for(STREAM, 8) == x(8)


def test_a_patient_keyring_reads_every_epoch():
    ring = Keyring.for_patient(ROOT)
    assert ring.secret_for(STREAM, 1) == x(1)
    assert ring.secret_for(OTHER_STREAM, 40_000) == x(40_000, OTHER_STREAM)
    assert ring.secret_for(STREAM, 0) is None
    assert ring.secret_for(STREAM, EPOCHS_PER_STREAM + 1) is None
    with pytest.raises(WrapError):
        ring.add_wrap(STREAM, 1, FORWARD, grant_wrap(ROOT, STREAM, 1, FORWARD,
                                                     ALICE.box_public))


def test_a_keyring_opens_readings_of_its_epochs_only():
    reading = Plaintext(HEART_RATE, 1_733_000_000_000, (61,))
    device = b"D" * 32
    sealed = {e: seal_reading(CHAIN, STREAM, device, e, e, epoch_keypair(
        epoch_state(ROOT, STREAM, e))[1], reading)[2] for e in (3, 4)}
    ring = keyring_with((3, FORWARD))
    assert ring.open_reading(CHAIN, STREAM, device, 3, 3, sealed[3]) == reading
    with pytest.raises(OpenError, match="no key"):
        ring.open_reading(CHAIN, STREAM, device, 4, 4, sealed[4])
    patient = Keyring.for_patient(ROOT)
    assert patient.open_reading(CHAIN, STREAM, device, 4, 4, sealed[4]) == reading


def test_add_wrap_refuses_a_wrap_for_other_fields_and_learns_nothing():
    ring = Keyring.for_grantee(ALICE)
    wrap = grant_wrap(ROOT, STREAM, 3, FORWARD, ALICE.box_public)
    with pytest.raises(WrapError):
        ring.add_wrap(STREAM, 4, FORWARD, wrap)
    assert ring.secret_for(STREAM, 4) is None
    ring.add_wrap(STREAM, 3, FORWARD, wrap)
    assert ring.secret_for(STREAM, 3) == x(3)


def test_a_keyring_is_one_kind():
    with pytest.raises(ValueError):
        Keyring(root=ROOT, grantee=ALICE)
    with pytest.raises(ValueError):
        Keyring()


def test_history_wraps_cost_one_walk_down_the_chain_however_many(monkeypatch):
    """A node can seal any number of history wraps to a grantee's box key (it is on the
    ledger): ascending epochs must not cost the reader a walk down the chain each."""
    import iomtnode.patient.keys as keys_module

    wraps = [(STREAM, epoch, HISTORY, make_wrap(STREAM, epoch, HISTORY, bytes([epoch % 256]) * 32,
                                                 ALICE.box_public))
             for epoch in range(EPOCHS_PER_STREAM - 40, EPOCHS_PER_STREAM + 1)]
    steps = 0
    honest = keys_module.regress

    def counting(state: bytes) -> bytes:
        nonlocal steps
        steps += 1
        return honest(state)

    monkeypatch.setattr(keys_module, "regress", counting)
    ring = Keyring.for_grantee(ALICE, wraps)
    assert ring.secret_for(STREAM, 1) is not None
    assert steps <= EPOCHS_PER_STREAM + 255  # one walk, then at most one checkpoint's steps
