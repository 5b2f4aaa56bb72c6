"""Admission checks the signer's right in the state before it verifies a signature: a
transaction that the state rules would refuse for who signed it (an unknown or revoked
device, a fresh key granting, a stranger acting as an authority) or a replayed reading
costs lookups, never a signature verification. Counted by the verifier's own counter."""

from __future__ import annotations

import random

import pytest

from iomtnode.admission.batch import CHUNK, admit_chunk
from iomtnode.admission.mempool import Mempool
from iomtnode.core import codec
from iomtnode.core import errors as e
from iomtnode.core.crypto import SigningKey, blake2b256
from iomtnode.core.evidence import make_evidence
from iomtnode.core.fields import U64_MAX
from iomtnode.core.payload import wrap_hash, wraps_hash
from iomtnode.core.tx import (
    FORWARD,
    AdmitDevice,
    AuditAnchor,
    AuthorityVote,
    DeviceMaintenance,
    EpochAnnounce,
    Erase,
    Grant,
    Reading,
    ReportEvidence,
    RevokeDevice,
    RevokeGrant,
    RotateDeviceKey,
    SignedTx,
    TxBody,
    decode_tx,
    encode_body,
    sign_tx,
)
from iomtnode.core.vote import VoteType, sign_vote

from ..core.helpers import CHAIN_ID, key, pub
from ..core.sealkit import NO_WRAPS, PROFILE, admit, announce, sealed_reading
from .chainkit import GENESIS, T0, reading, seal, source_chain

C = blake2b256(b"any 32 bytes")  # a commitment, a key, a hash: nothing checks it first


@pytest.fixture
def chain(tmp_path):
    chain, _ = source_chain(tmp_path / "data", 0, 0)
    yield chain
    chain.store.close()


def pool(chain) -> Mempool:
    return Mempool(chain, now_ms=lambda: GENESIS.time_ms + 10_000)


def unsigned(body: TxBody) -> SignedTx:
    """``body`` with a signature of zeros: any verification of it fails."""
    return decode_tx(codec.encode([encode_body(body), bytes(64)]))


async def admit_all(mempool: Mempool, txs: list[SignedTx]) -> list[object]:
    out: list[object] = []
    for start in range(0, len(txs), CHUNK):
        out += await admit_chunk(mempool, txs[start:start + CHUNK])
    return out


async def test_readings_from_unknown_devices_cost_no_verification(chain):
    mempool = pool(chain)
    rng = random.Random(18)
    strangers = [unsigned(Reading(rng.randbytes(32), rng.randrange(1, 2**32), T0, 1, 0, C))
                 for _ in range(2000)]
    results = await admit_all(mempool, strangers)
    assert all(isinstance(r, e.UnknownDeviceError) for r in results)
    assert mempool.verifier.verified_count == 0 and len(mempool) == 0
    honest = [reading("d1", seq) for seq in range(1, 21)]
    assert await admit_all(mempool, honest) == honest
    assert mempool.verifier.verified_count == 20  # the honest ones are verified, once


def _evidence(reporter: str) -> TxBody:
    a, b = (sign_vote(key("A"), CHAIN_ID, VoteType.PREVOTE, 1, 0, bytes([x]) * 32)
            for x in (1, 2))
    return ReportEvidence(pub(reporter), make_evidence(a, b).encode())


def _grant(stream: bytes) -> Grant:
    return Grant(stream, pub("G"), C, T0 + 10**9, 1, FORWARD, C, 0)


def _epoch(stream: bytes) -> EpochAnnounce:
    return EpochAnnounce(stream, 2, C, [], wraps_hash(NO_WRAPS))


REFUSED_BEFORE_THE_SIGNATURE: list[tuple[str, TxBody, type[e.RuleError]]] = [
    ("a grant from a fresh key", _grant(SigningKey.generate().public), e.UnknownStreamError),
    ("a grant from an authority", _grant(pub("A")), e.UnknownStreamError),
    ("a grant from a device", _grant(pub("d1")), e.UnknownStreamError),
    ("an epoch from a fresh key", _epoch(SigningKey.generate().public), e.UnknownStreamError),
    ("a revocation of a grant never made",
     RevokeGrant(pub("P"), pub("G"), 0, 2, C, [], wraps_hash(NO_WRAPS)), e.UnknownGrantError),
    ("an erasure by a stranger", Erase(pub("X"), pub("P"), 0, U64_MAX, b"", 0),
     e.NotPermittedError),
    ("an authority's erasure without a request",
     Erase(pub("A"), pub("P"), 0, U64_MAX, b"", 0), e.NotPermittedError),
    ("an audit anchor by a stranger", AuditAnchor(pub("X"), pub("N"), 0, 1, C),
     e.NotAuthorityError),
    ("a reading of a revoked device", Reading(pub("d3"), 1, T0, 1, 0, C),
     e.RevokedDeviceError),
    ("a rotation of an unknown device", RotateDeviceKey(pub("X"), pub("Y")),
     e.UnknownDeviceError),
    ("a revocation by a stranger", RevokeDevice(pub("X"), pub("d1"), "lost", 0),
     e.NotPermittedError),
    ("an admission by a stranger",
     AdmitDevice(pub("X"), pub("d9"), pub("P"), PROFILE), e.NotAuthorityError),
    ("maintenance by a stranger",
     DeviceMaintenance(pub("X"), pub("d1"), "calibration", b"", T0), e.NotAuthorityError),
    ("a vote by a stranger", AuthorityVote(pub("X"), pub("X"), True, 0), e.NotAuthorityError),
    ("evidence from a stranger", _evidence("X"), e.NotAuthorityError),
    ("a replayed reading", Reading(pub("d1"), 1, T0, 1, 0, C), e.ReplayedSequenceError),
]


@pytest.mark.parametrize(("what", "body", "error"), REFUSED_BEFORE_THE_SIGNATURE,
                         ids=[case[0] for case in REFUSED_BEFORE_THE_SIGNATURE])
async def test_a_signer_without_the_right_costs_no_verification(chain, what, body, error):
    seal(chain, [reading("d1", 1), reading("d1", 2)])  # d1's 1 is used: its replay is refused
    revoke = RevokeDevice(pub("A"), pub("d3"), "lost", 0)
    seal(chain, [decode_tx(_signed(revoke, "A"))])
    mempool = pool(chain)
    tx = unsigned(body)  # a zero signature: verified, it would be a BadSignatureRuleError
    [result] = await admit_chunk(mempool, [tx])
    assert type(result) is error, what
    with pytest.raises(error):
        mempool.add_tx(tx)
    assert mempool.verifier.verified_count == 0


def _signed(body: TxBody, signer: str) -> bytes:
    return sign_tx(body, key(signer), CHAIN_ID).raw


async def test_the_right_is_read_in_the_pending_state(chain):
    """An epoch and a grant wait for nothing: their stream's device admitted in a pending
    transaction makes the stream known to admission at once."""
    mempool = pool(chain)
    stream = SigningKey.generate()
    admission = decode_tx(admit(key("A"), pub("d7"), stream.public, CHAIN_ID).raw)
    epoch = announce(stream, CHAIN_ID)
    grant = sign_tx(Grant(stream.public, pub("G"), C, T0 + 10**9, 1, FORWARD, wrap_hash(C), 0),
                    stream, CHAIN_ID, C)
    [refused] = await admit_chunk(mempool, [grant])
    assert isinstance(refused, e.UnknownStreamError)
    first = sealed_reading(key("d7"), 1, T0, CHAIN_ID)
    rng = random.Random(7)
    junk = [unsigned(Reading(rng.randbytes(32), 1, T0, 1, 0, C)) for _ in range(100)]
    # in one chunk: the device's admission gives its stream's epoch and grant, and its
    # reading, their right; the strangers' readings after it are tried again and still cost
    # nothing
    results = await admit_chunk(mempool, [admission, epoch, *junk, first, grant])
    assert results[:2] == [admission, epoch] and results[-2:] == [first, grant]
    assert all(isinstance(r, e.UnknownDeviceError) for r in results[2:-2])
    assert mempool.verifier.verified_count == 4
