"""Keys, the hash, and domain-separated signatures."""

from __future__ import annotations

import nacl.signing
import pytest

from iomtnode.core.crypto import (
    MAX_CHAIN_ID_BYTES,
    SIG_BYTES,
    BadSignatureError,
    Domain,
    SigningKey,
    blake2b256,
    signing_message,
    verify,
)

from .helpers import CHAIN_ID, key

DIGEST = blake2b256(b"a body")
OTHER_DIGEST = blake2b256(b"another body")


def test_blake2b256_known_answer() -> None:
    assert blake2b256(b"").hex() == (
        "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"
    )
    assert len(blake2b256(b"x" * 1000)) == 32


def test_public_key_known_answer() -> None:
    # RFC 8032, section 7.1, test 1
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    assert SigningKey(seed).public.hex() == (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )


def test_signing_message_layout() -> None:
    msg = signing_message(Domain.READING, "abc", DIGEST)
    assert msg == b"iomt/reading/v2\x00" + b"\x03abc" + DIGEST  # v2: sealed readings


def test_chain_id_length_prefix_prevents_ambiguity() -> None:
    # Without the length byte, ("ab", d) and ("a", b"b" + d) would sign the same bytes.
    assert signing_message(Domain.GRANT, "ab", DIGEST) != signing_message(
        Domain.GRANT, "a", b"b" + DIGEST
    )


def test_chain_id_too_long() -> None:
    assert signing_message(Domain.GRANT, "c" * MAX_CHAIN_ID_BYTES, DIGEST)[-32:] == DIGEST
    with pytest.raises(ValueError, match="chain id longer"):
        signing_message(Domain.GRANT, "c" * (MAX_CHAIN_ID_BYTES + 1), DIGEST)


def test_domain_tags_are_distinct_and_prefix_free() -> None:
    tags = [d.value for d in Domain]
    assert len(set(tags)) == len(tags)
    for a in tags:
        assert a.endswith(b"\x00")
        assert a.startswith(b"iomt/")
        for b in tags:
            assert a == b or not b.startswith(a)


def test_sign_and_verify() -> None:
    k = key("A")
    sig = k.sign(Domain.READING, CHAIN_ID, DIGEST)
    assert len(sig) == SIG_BYTES
    assert sig == k.sign(Domain.READING, CHAIN_ID, DIGEST)  # ed25519 is deterministic
    assert verify(k.public, Domain.READING, CHAIN_ID, DIGEST, sig) is None
    # it is a plain ed25519 signature over the signing message
    message = signing_message(Domain.READING, CHAIN_ID, DIGEST)
    assert nacl.signing.VerifyKey(k.public).verify(message, sig) == message


@pytest.mark.parametrize("other", [d for d in Domain if d is not Domain.READING], ids=str)
def test_signature_does_not_verify_in_another_domain(other: Domain) -> None:
    k = key("A")
    sig = k.sign(Domain.READING, CHAIN_ID, DIGEST)
    with pytest.raises(BadSignatureError, match=f"bad {other.name.lower()} signature"):
        verify(k.public, other, CHAIN_ID, DIGEST, sig)


@pytest.mark.parametrize("chain_id", ["iomt-test2", "iomt-tes", "", "IOMT-TEST"])
def test_signature_does_not_verify_on_another_chain(chain_id: str) -> None:
    k = key("A")
    sig = k.sign(Domain.PRECOMMIT, CHAIN_ID, DIGEST)
    with pytest.raises(BadSignatureError):
        verify(k.public, Domain.PRECOMMIT, chain_id, DIGEST, sig)


def test_signature_does_not_verify_for_another_digest() -> None:
    k = key("A")
    sig = k.sign(Domain.PRECOMMIT, CHAIN_ID, DIGEST)
    with pytest.raises(BadSignatureError):
        verify(k.public, Domain.PRECOMMIT, CHAIN_ID, OTHER_DIGEST, sig)


def test_signature_does_not_verify_under_another_key() -> None:
    sig = key("A").sign(Domain.PRECOMMIT, CHAIN_ID, DIGEST)
    with pytest.raises(BadSignatureError):
        verify(key("B").public, Domain.PRECOMMIT, CHAIN_ID, DIGEST, sig)


@pytest.mark.parametrize("position", [0, 31, 32, 63])
def test_tampered_signature_does_not_verify(position: int) -> None:
    k = key("A")
    sig = bytearray(k.sign(Domain.GRANT, CHAIN_ID, DIGEST))
    sig[position] ^= 0x01
    with pytest.raises(BadSignatureError):
        verify(k.public, Domain.GRANT, CHAIN_ID, DIGEST, bytes(sig))


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_wrong_length_key(length: int) -> None:
    sig = key("A").sign(Domain.GRANT, CHAIN_ID, DIGEST)
    with pytest.raises(BadSignatureError, match="public key must be 32 bytes") as info:
        verify(key("A").public[:1] * length, Domain.GRANT, CHAIN_ID, DIGEST, sig)
    assert type(info.value) is BadSignatureError


@pytest.mark.parametrize("length", [0, 32, 63, 65])
def test_wrong_length_signature(length: int) -> None:
    sig = key("A").sign(Domain.GRANT, CHAIN_ID, DIGEST)
    bad = (sig * 2)[:length]
    with pytest.raises(BadSignatureError, match="signature must be 64 bytes") as info:
        verify(key("A").public, Domain.GRANT, CHAIN_ID, DIGEST, bad)
    assert type(info.value) is BadSignatureError


@pytest.mark.parametrize(
    "public",
    [bytes(32), b"\x01" + bytes(31), b"\xff" * 32],
    ids=["zero", "identity", "not-on-curve"],
)
def test_degenerate_public_keys_are_refused(public: bytes) -> None:
    sig = key("A").sign(Domain.GRANT, CHAIN_ID, DIGEST)
    with pytest.raises(BadSignatureError) as info:
        verify(public, Domain.GRANT, CHAIN_ID, DIGEST, sig)
    assert type(info.value) is BadSignatureError


def test_repr_hides_the_seed() -> None:
    seed = blake2b256(b"secret")
    k = SigningKey(seed)
    for text in (repr(k), str(k), f"{k}", repr([k]), repr({"k": k})):
        assert seed.hex() not in text
        assert seed.hex()[:8] not in text
        assert repr(seed) not in text
        assert k.public.hex()[:16] in text


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_seed_must_be_32_bytes(length: int) -> None:
    with pytest.raises(ValueError, match="seed is 32 bytes"):
        SigningKey(b"s" * length)


def test_generated_keys_differ_and_keys_are_deterministic() -> None:
    a, b = SigningKey.generate(), SigningKey.generate()
    assert a.seed != b.seed
    assert a.public != b.public
    assert len(a.public) == 32
    assert SigningKey(a.seed).public == a.public
