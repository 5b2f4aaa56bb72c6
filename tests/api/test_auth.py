"""Proving a key on a connection: a signature over this connection's challenge, in the api-auth
domain, on this chain, with this connection's channel binding, proves the key; each other
signature is refused with its precise code."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes

from iomtnode.api.auth import (
    BAD_AUTH_SIGNATURE,
    MAX_AUTH_FAILURES,
    MAX_PROVEN_KEYS,
    NO_CHALLENGE,
    TOO_MANY_FAILURES,
    TOO_MANY_KEYS,
    AuthApi,
    ConnectionAuth,
)
from iomtnode.api.jsonrpc import INVALID_PARAMS, RpcError
from iomtnode.core.challenge import (
    MAX_BINDING_BYTES,
    NONCE_BYTES,
    ChallengeError,
    challenge_digest,
    tls_server_end_point,
)
from iomtnode.core.crypto import Domain, SigningKey

from .certs import make_cert

CHAIN = "iomt-test"
BINDING = b"\x07" * 32
PATIENT = SigningKey(b"\x01" * 32)
OTHER = SigningKey(b"\x02" * 32)


def answer(key: SigningKey, nonce: bytes, *, binding: bytes = BINDING, chain: str = CHAIN,
           domain: Domain = Domain.API_AUTH) -> bytes:
    return key.sign(domain, chain, challenge_digest(nonce, binding))


def refused(auth: ConnectionAuth, public: bytes, signature: bytes, chain: str = CHAIN) -> int:
    with pytest.raises(RpcError) as info:
        auth.prove(public, signature, chain)
    return info.value.code


def test_only_keys_the_ledger_knows_are_participants():
    auth = ConnectionAuth(BINDING)
    device = SigningKey(b"\x03" * 32)
    known = {PATIENT.public, device.public}.__contains__
    auth.prove(OTHER.public, answer(OTHER, auth.challenge()), CHAIN, known=known)
    assert auth.keys == {OTHER.public} and auth.participants == frozenset()
    auth.prove(PATIENT.public, answer(PATIENT, auth.challenge()), CHAIN, known=known)
    assert auth.participants == {PATIENT.public}
    with pytest.raises(RpcError):  # a key the ledger knows, a wrong signature: not proven
        auth.prove(device.public, answer(OTHER, auth.challenge()), CHAIN, known=known)
    assert auth.participants == {PATIENT.public}


def test_the_keys_own_signature_over_the_challenge_proves_it():
    auth = ConnectionAuth(BINDING)
    assert auth.keys == frozenset()
    auth.prove(PATIENT.public, answer(PATIENT, auth.challenge()), CHAIN)
    assert auth.keys == {PATIENT.public}
    auth.prove(OTHER.public, answer(OTHER, auth.challenge()), CHAIN)  # a second key
    assert auth.keys == {PATIENT.public, OTHER.public}


@pytest.mark.parametrize("case", [
    "signed by another key",     # claims the patient's key without its secret
    "another connection's nonce",  # a signature replayed from where it was made
    "another domain",            # a signature made for another kind of message
    "another channel binding",   # made through a relay that showed another certificate
    "another chain",
])
def test_any_other_signature_is_refused(case):
    auth, elsewhere = ConnectionAuth(BINDING), ConnectionAuth(BINDING)
    nonce, other_nonce = auth.challenge(), elsewhere.challenge()
    signature = {
        "signed by another key": answer(OTHER, nonce),
        "another connection's nonce": answer(PATIENT, other_nonce),
        "another domain": answer(PATIENT, nonce, domain=Domain.HANDSHAKE),
        "another channel binding": answer(PATIENT, nonce, binding=b"\x08" * 32),
        "another chain": answer(PATIENT, nonce, chain="iomt-other"),
    }[case]
    assert refused(auth, PATIENT.public, signature) == BAD_AUTH_SIGNATURE
    assert auth.keys == frozenset()


def test_a_challenge_answers_one_authenticate_only():
    auth = ConnectionAuth()
    assert refused(auth, PATIENT.public, b"\x00" * 64) == NO_CHALLENGE  # none asked yet
    signature = answer(PATIENT, auth.challenge(), binding=b"")
    auth.prove(PATIENT.public, signature, CHAIN)
    # the same signature again on the same connection: the challenge is used up
    assert refused(auth, OTHER.public, answer(OTHER, b"\x00" * 32, binding=b"")) == NO_CHALLENGE
    nonce = auth.challenge()
    assert refused(auth, OTHER.public, answer(PATIENT, nonce, binding=b"")) == BAD_AUTH_SIGNATURE
    # a wrong answer used the challenge up too: the right one now comes too late
    assert refused(auth, OTHER.public, answer(OTHER, nonce, binding=b"")) == NO_CHALLENGE


def test_a_new_challenge_replaces_the_pending_one():
    auth = ConnectionAuth(BINDING)
    first = auth.challenge()
    second = auth.challenge()
    assert first != second and len(second) == NONCE_BYTES
    assert refused(auth, PATIENT.public, answer(PATIENT, first)) == BAD_AUTH_SIGNATURE


def test_a_connection_proves_a_bounded_number_of_keys():
    auth = ConnectionAuth(BINDING)
    for i in range(MAX_PROVEN_KEYS):
        key = SigningKey(bytes([i + 10]) * 32)
        auth.prove(key.public, answer(key, auth.challenge()), CHAIN)
    auth.prove(key.public, answer(key, auth.challenge()), CHAIN)  # a key proven again: no new one
    extra = SigningKey(b"\x55" * 32)
    assert refused(auth, extra.public, answer(extra, auth.challenge())) == TOO_MANY_KEYS
    assert len(auth.keys) == MAX_PROVEN_KEYS


class FakeConn:
    def __init__(self, binding: bytes = b"") -> None:
        self.auth = ConnectionAuth(binding)
        self.closed_with: tuple[int, str | None] | None = None

    def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed_with = (code, reason)


async def test_the_methods_answer_with_the_chain_binding_and_keys():
    api, conn = AuthApi(CHAIN, {PATIENT.public}.__contains__), FakeConn(BINDING)
    challenge = await api.auth_challenge(conn)
    assert challenge["chain_id"] == CHAIN and challenge["binding"] == "tls-server-end-point"
    signature = answer(PATIENT, bytes.fromhex(challenge["nonce"]))
    result = await api.authenticate(PATIENT.public.hex(), signature.hex(), conn)
    assert result == {"keys": [PATIENT.public.hex()], "participants": [PATIENT.public.hex()]}
    signature = answer(OTHER, bytes.fromhex((await api.auth_challenge(conn))["nonce"]))
    result = await api.authenticate(OTHER.public.hex(), signature.hex(), conn)  # no one's key
    assert result == {"keys": sorted([PATIENT.public.hex(), OTHER.public.hex()]),
                      "participants": [PATIENT.public.hex()]}
    assert (await api.auth_challenge(FakeConn()))["binding"] == "none"
    for public, sig in [("zz", signature.hex()), (PATIENT.public.hex(), "00" * 63)]:
        with pytest.raises(RpcError) as info:
            await api.authenticate(public, sig, conn)
        assert info.value.code == INVALID_PARAMS


async def test_too_many_failures_close_the_connection():
    api, conn = AuthApi(CHAIN, {PATIENT.public}.__contains__), FakeConn()
    for failure in range(1, MAX_AUTH_FAILURES + 2):
        nonce = bytes.fromhex((await api.auth_challenge(conn))["nonce"])
        with pytest.raises(RpcError) as info:
            await api.authenticate(PATIENT.public.hex(), answer(OTHER, nonce, binding=b"").hex(),
                                   conn)
        assert info.value.data["failures"] == failure
        assert (conn.closed_with is not None) == (failure > MAX_AUTH_FAILURES)
    # the close takes effect at the handler's next checkpoint, and a JSON batch's requests may
    # run before it: from now on nothing is verified, not even the right signature
    nonce = bytes.fromhex((await api.auth_challenge(conn))["nonce"])
    with pytest.raises(RpcError) as info:
        await api.authenticate(PATIENT.public.hex(), answer(PATIENT, nonce, binding=b"").hex(),
                               conn)
    assert info.value.code == TOO_MANY_FAILURES
    assert conn.auth.keys == frozenset()
    assert conn.closed_with is not None and conn.closed_with[0] == 1008


def test_the_digest_checks_its_sizes():
    with pytest.raises(ChallengeError):
        challenge_digest(b"\x00" * (NONCE_BYTES - 1), b"")
    with pytest.raises(ChallengeError):
        challenge_digest(b"\x00" * NONCE_BYTES, b"\x00" * (MAX_BINDING_BYTES + 1))
    # the binding's length is part of what is signed: no two (nonce, binding) pairs collide
    assert challenge_digest(b"\x00" * 32, b"") != challenge_digest(b"\x00" * 32, b"\x00")


@pytest.mark.parametrize("alg, digest", [(hashes.SHA256(), hashlib.sha256),
                                         (hashes.SHA384(), hashlib.sha384),
                                         (hashes.SHA512(), hashlib.sha512)])
def test_the_channel_binding_hashes_the_certificate_as_rfc_5929_says(tmp_path, alg, digest):
    cert = make_cert(tmp_path, hash_alg=alg)
    assert tls_server_end_point(cert.der) == digest(cert.der).digest()
    with pytest.raises(ChallengeError):
        tls_server_end_point(b"not a certificate")
