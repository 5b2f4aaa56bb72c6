"""Sealing readings: round trips, the associated data's binding, and sizes that say nothing
of the value."""

from __future__ import annotations

import os

import nacl.bindings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iomtnode.core import payload
from iomtnode.core.payload import reading_ad, sealed_bytes, sidecar_bytes
from iomtnode.patient import seal as sealing
from iomtnode.patient.keys import epoch_keypair
from iomtnode.patient.plaintext import (
    BLOOD_PRESSURE,
    BODY_TEMPERATURE,
    ECG,
    ECG_PATCH,
    HEART_RATE,
    SPO2,
    THERMOMETER,
    Plaintext,
    PlaintextError,
)
from iomtnode.patient.seal import (
    OpenError,
    SealError,
    open_reading,
    open_sidecar,
    seal,
    seal_reading,
    size_class_for,
)

SECRET, PUBLIC = epoch_keypair(b"\x07" * 32)
CHAIN, STREAM, DEVICE = "iomt-test", b"S" * 32, b"D" * 32
AD = reading_ad(CHAIN, STREAM, DEVICE, 9, 3)
HR = Plaintext(HEART_RATE, 1_733_000_000_000, (78,))
MAX_MS = 10**13 - 1  # 13 digits


def ciphertext(sidecar: bytes) -> bytes:
    return sidecar[payload.SALT_BYTES:]


def test_a_spot_vital_round_trips_in_class_0():
    sidecar = seal(HR, PUBLIC, AD)
    assert len(sidecar) == sidecar_bytes(0)
    assert len(ciphertext(sidecar)) == sealed_bytes(0) == 112
    assert open_sidecar(sidecar, SECRET, AD) == HR


def test_seal_reading_gives_class_commitment_and_sidecar():
    size_class, commit, sidecar = seal_reading(CHAIN, STREAM, DEVICE, 9, 3, PUBLIC, HR)
    assert size_class == 0
    payload.check_sidecar(size_class, commit, sidecar)
    assert open_reading(CHAIN, STREAM, DEVICE, 9, 3, SECRET, sidecar) == HR


def test_two_seals_of_one_reading_differ():
    assert seal(HR, PUBLIC, AD) != seal(HR, PUBLIC, AD)  # fresh salt and ephemeral key


@pytest.mark.parametrize("other", [
    dict(chain_id="iomt-other"),
    dict(stream=b"T" * 32),
    dict(device=b"E" * 32),
    dict(seq=10),
    dict(epoch=4),
])
def test_a_ciphertext_opens_only_under_its_own_readings_ad(other):
    fields = dict(chain_id=CHAIN, stream=STREAM, device=DEVICE, seq=9, epoch=3)
    _, _, sidecar = seal_reading(**fields, epoch_public=PUBLIC, plain=HR)
    with pytest.raises(OpenError, match="associated data"):
        open_reading(**{**fields, **other}, epoch_secret=SECRET, sidecar=sidecar)


def test_wrong_key_and_tampering_fail_to_open():
    sidecar = seal(HR, PUBLIC, AD)
    other_secret, _ = epoch_keypair(b"\x08" * 32)
    with pytest.raises(OpenError):
        open_sidecar(sidecar, other_secret, AD)
    for index in (payload.SALT_BYTES, payload.SALT_BYTES + 40, len(sidecar) - 1):
        flipped = bytearray(sidecar)
        flipped[index] ^= 1
        with pytest.raises(OpenError):
            open_sidecar(bytes(flipped), SECRET, AD)
    with pytest.raises(OpenError, match="size class"):
        open_sidecar(sidecar[:-1], SECRET, AD)


def sealed_raw(padded: bytes) -> bytes:
    """A sidecar of arbitrary padded bytes, sealed as the device library would."""
    a = os.urandom(32)
    ephemeral = nacl.bindings.crypto_scalarmult_base(a)
    shared = nacl.bindings.crypto_scalarmult(a, PUBLIC)
    key, nonce = sealing._key_and_nonce(shared, ephemeral, PUBLIC)
    body = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(padded, AD, nonce, key)
    return bytes(16) + ephemeral + body


def test_the_documented_construction_opens():
    padded = nacl.bindings.sodium_pad(HR.encode(), 64)
    assert open_sidecar(sealed_raw(padded), SECRET, AD) == HR


def test_bad_padding_and_bad_plaintext_are_refused():
    with pytest.raises(OpenError, match="padding"):
        open_sidecar(sealed_raw(bytes(64)), SECRET, AD)
    with pytest.raises(OpenError, match="plaintext"):
        open_sidecar(sealed_raw(nacl.bindings.sodium_pad(b"\x93\x01\x02\x03", 64)), SECRET, AD)


def test_a_low_order_key_is_refused_both_ways():
    with pytest.raises(SealError, match="low order"):
        seal(HR, bytes(32), AD)
    sidecar = bytearray(seal(HR, PUBLIC, AD))
    sidecar[16:48] = bytes(32)  # an all-zero ephemeral key
    with pytest.raises(OpenError, match="low order"):
        open_sidecar(bytes(sidecar), SECRET, AD)


def test_size_classes():
    assert [size_class_for(n) for n in (0, 63, 64, 16_383, 16_384, 131_071)] == [0, 0, 1, 1, 2, 2]
    with pytest.raises(SealError, match="split"):
        size_class_for(131_072)
    # a larger class may be asked for, a smaller one may not
    assert len(seal(HR, PUBLIC, AD, size_class=1)) == sidecar_bytes(1)
    ecg = Plaintext(ECG, 1, (250, 1, 1000), bytes(15_000), ECG_PATCH)
    with pytest.raises(SealError, match="does not fit"):
        seal(ecg, PUBLIC, AD, size_class=0)


@pytest.mark.parametrize(("samples", "size_class"), [(15_000, 1), (120_000, 2)])
def test_ecg_strips_go_to_their_class(samples, size_class):
    strip = Plaintext(ECG, MAX_MS, (500, 12, 2_500), os.urandom(samples), ECG_PATCH)
    got_class, commit, sidecar = seal_reading(CHAIN, STREAM, DEVICE, 1, 1, PUBLIC, strip)
    assert got_class == size_class
    assert len(ciphertext(sidecar)) == sealed_bytes(size_class)
    payload.check_sidecar(size_class, commit, sidecar)
    assert open_reading(CHAIN, STREAM, DEVICE, 1, 1, SECRET, sidecar) == strip


ms = st.integers(0, MAX_MS)
spot_vitals = st.one_of(
    st.builds(lambda v, t: Plaintext(HEART_RATE, t, (v,)), st.integers(0, 300), ms),
    st.builds(lambda v, t: Plaintext(SPO2, t, (v,)), st.integers(0, 100), ms),
    st.builds(lambda v, t: Plaintext(BODY_TEMPERATURE, t, (v,), b"", THERMOMETER),
              st.integers(2_500, 4_500), ms),
    st.builds(lambda s, d, t: Plaintext(BLOOD_PRESSURE, t, (s, d)),
              st.integers(40, 300), st.integers(20, 200), ms),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(spot_vitals)
def test_every_spot_vital_seals_to_exactly_class_0(plain):
    assert len(plain.encode()) < payload.PADDED_BYTES[0]
    sidecar = seal(plain, PUBLIC, AD)
    assert len(ciphertext(sidecar)) == sealed_bytes(0)
    assert open_sidecar(sidecar, SECRET, AD) == plain


def test_the_extremes_of_every_vital_seal_alike():
    extremes = [Plaintext(HEART_RATE, t, (v,)) for v in (0, 78, 128, 300) for t in (0, MAX_MS)]
    extremes += [Plaintext(BLOOD_PRESSURE, MAX_MS, (s, d)) for s in (40, 118, 202, 300)
                 for d in (20, 200)]
    extremes += [Plaintext(BODY_TEMPERATURE, MAX_MS, (4_500,), b"", THERMOMETER)]
    assert {len(seal(p, PUBLIC, AD)) for p in extremes} == {sidecar_bytes(0)}


def test_a_wrong_number_of_values_is_said_in_plain_words():
    with pytest.raises(PlaintextError, match=r"^heart_rate takes 1 value, not 2$"):
        Plaintext(HEART_RATE, 1, (72, 3))
    with pytest.raises(PlaintextError, match=r"^blood_pressure takes 2 values, not 1$"):
        Plaintext(BLOOD_PRESSURE, 1, (120,))
