"""The patient's key schedule: derivations, key regression, stream certificates, key cards."""

from __future__ import annotations

import hashlib

import pytest

from iomtnode.core import codec
from iomtnode.core.crypto import SigningKey
from iomtnode.patient import keys
from iomtnode.patient.keys import (
    EPOCHS_PER_STREAM,
    CardError,
    CertificateError,
    GranteeKeys,
    PatientKeyError,
    Regression,
    check_card,
    check_certificate,
    derive_identity,
    derive_stream,
    earlier_state,
    epoch_keypair,
    epoch_state,
    regress,
    regression_top,
    stream_certificate,
)

ROOT = bytes(range(32))
CHAIN = "iomt-test"


@pytest.fixture(scope="module")
def stream() -> bytes:
    return derive_stream(ROOT, CHAIN, "vitals").public


def test_derivations_are_deterministic_and_separate():
    identity = derive_identity(ROOT)
    assert isinstance(identity, SigningKey)
    assert derive_identity(ROOT) == identity
    vitals = derive_stream(ROOT, CHAIN, "vitals")
    assert derive_stream(ROOT, CHAIN, "vitals", 0) == vitals
    others = {
        identity.public,
        vitals.public,
        derive_stream(ROOT, CHAIN, "ecg").public,
        derive_stream(ROOT, "iomt-other", "vitals").public,
        derive_stream(ROOT, CHAIN, "vitals", 1).public,
        derive_stream(bytes(32), CHAIN, "vitals").public,
    }
    assert len(others) == 6


def test_stream_seed_is_the_documented_hkdf():
    info = b"iomt/patient/stream/v1\x00iomt-test\x00vitals\x00" + (7).to_bytes(4, "big")
    assert derive_stream(ROOT, CHAIN, "vitals", 7).seed == keys.hkdf(ROOT, info)
    assert derive_identity(ROOT).seed == keys.hkdf(ROOT, b"iomt/patient/identity/v1")


@pytest.mark.parametrize("bad", [
    lambda: derive_identity(bytes(31)),
    lambda: derive_stream(ROOT, CHAIN, "a\x00b"),
    lambda: derive_stream(ROOT, "", "vitals"),
    lambda: derive_stream(ROOT, CHAIN, "vitals", 2**32),
])
def test_bad_derivation_inputs_are_refused(bad):
    with pytest.raises(PatientKeyError):
        bad()


def test_regression_chain_steps_down_by_the_documented_hash(stream):
    top = regression_top(ROOT, stream)
    assert top == keys.hkdf(ROOT, b"iomt/patient/regress/v1\x00" + stream)
    assert epoch_state(ROOT, stream, EPOCHS_PER_STREAM) == top

    step = hashlib.blake2b(b"iomt/regress/v1\x00" + top, digest_size=32).digest()
    assert epoch_state(ROOT, stream, EPOCHS_PER_STREAM - 1) == step


def test_a_state_derives_every_earlier_epoch_as_the_top_does(stream):
    top = regression_top(ROOT, stream)
    t_300 = epoch_state(ROOT, stream, 300)
    # walking all the way from the top gives the same state as the checkpointed cache
    assert earlier_state(top, EPOCHS_PER_STREAM, 300) == t_300
    for target in range(1, 301):
        assert earlier_state(t_300, 300, target) == epoch_state(ROOT, stream, target)
    for e in (1, 255, 256, 257, 511, 512, 513, 65_280, 65_535):
        assert epoch_state(ROOT, stream, e) == earlier_state(top, EPOCHS_PER_STREAM, e)


def test_regression_from_any_state_matches_the_chain(stream):
    for top in (1, 5, 256, 257, 700):
        chain = Regression(epoch_state(ROOT, stream, top), top)
        assert [chain.state(e) for e in range(1, top + 1)] == [
            epoch_state(ROOT, stream, e) for e in range(1, top + 1)]
        with pytest.raises(PatientKeyError):
            chain.state(top + 1)


def test_no_state_derives_a_later_one(stream):
    t_5 = epoch_state(ROOT, stream, 5)
    with pytest.raises(PatientKeyError):
        earlier_state(t_5, 5, 6)
    assert regress(epoch_state(ROOT, stream, 6)) == t_5
    for bad in (0, EPOCHS_PER_STREAM + 1):
        with pytest.raises(PatientKeyError):
            epoch_state(ROOT, stream, bad)


def test_epoch_keypair_is_the_documented_x25519_pair(stream):
    import nacl.bindings
    t_e = epoch_state(ROOT, stream, 3)
    x_e, public = epoch_keypair(t_e)
    assert x_e == keys.hkdf(t_e, b"iomt/epoch/x25519/v1")
    assert public == nacl.bindings.crypto_scalarmult_base(x_e)
    assert epoch_keypair(epoch_state(ROOT, stream, 4))[1] != public


def test_stream_certificate_round_trips_and_binds_its_fields(stream):
    identity = derive_identity(ROOT)
    cert = stream_certificate(identity, CHAIN, stream, "vitals")
    assert check_certificate(cert) == (identity.public, CHAIN, stream, "vitals")
    fields = codec.decode(cert)
    for index, value in ((1, "iomt-other"), (2, bytes(32)), (3, "ecg"),
                         (0, SigningKey(bytes(32)).public)):
        forged = list(fields)
        forged[index] = value
        with pytest.raises(CertificateError):
            check_certificate(codec.encode(forged))
    with pytest.raises(CertificateError):
        check_certificate(b"\x93garbage")


def test_key_card_round_trips():
    grantee = GranteeKeys.generate()
    assert check_card(grantee.card()) == (grantee.grantee, grantee.box_public)
    assert len(grantee.card()) <= keys.MAX_CARD_BYTES


def test_a_card_with_a_swapped_box_key_is_refused():
    grantee, other = GranteeKeys.generate(), GranteeKeys.generate()
    g, _, signature = codec.decode(grantee.card())
    with pytest.raises(CardError, match="signature"):
        check_card(codec.encode([g, other.box_public, signature]))
    # another signer's card under this grantee's key: refused too
    _, b, other_signature = codec.decode(other.card())
    with pytest.raises(CardError):
        check_card(codec.encode([g, b, other_signature]))


@pytest.mark.parametrize("card", [
    b"", b"\x01", codec.encode([b"x" * 32, b"y" * 32]), codec.encode([1, 2, 3]),
    codec.encode([b"x" * 32, bytes(32), b"s" * 64]),
    codec.encode([b"x" * 31, b"y" * 32, b"s" * 64]),
])
def test_malformed_cards_are_refused(card):
    with pytest.raises(CardError):
        check_card(card)


def test_keys_do_not_print_their_secrets():
    grantee = GranteeKeys.generate()
    assert grantee.box_secret.hex() not in repr(grantee)
    assert grantee.signing.seed.hex() not in repr(grantee)
