"""The rules of a patient's streams (docs/privacy.md, sections 1, 3 and 5) as scenario tables,
run by the state tables' runner (:mod:`.test_state`): epochs and the readings sealed to them,
grants and their limits, revocation as the next epoch, erasure, audit anchors, and what a
stream key may not be.

P and Q are streams (the pseudonyms of a patient's scope), hr1, hr2 devices, G, H grantees,
A, B authorities, N a node whose audit log is anchored, X a stranger. Each rule has a case
whose expected refusal turns into an unexpected OK when the rule is removed.
"""

from __future__ import annotations

import pytest

from iomtnode.core import errors as e
from iomtnode.core.crypto import blake2b256
from iomtnode.core.fields import U64_MAX
from iomtnode.core.tx import MAX_GRANTEES, Reading

from .helpers import pub
from .test_state import (
    CASES as STATE_CASES,
)
from .test_state import (
    NEXT,
    OK,
    T0,
    Case,
    HasGrant,
    StreamIs,
    Tx,
    add,
    admit,
    anchor,
    epoch,
    erase,
    grant,
    now,
    reading,
    revoke,
    rotate,
    run,
    ungrant,
)

REQUEST = blake2b256(b"the patient's signed request")
BLOB, OTHER_BLOB = blake2b256(b"a blob"), blake2b256(b"another blob")  # commitments


def blob_reading(dev: str, seq: int, commitment: bytes, size_class: int = 1) -> Tx:
    """A class 1 or 2 reading of ``dev`` naming the blob of ``commitment``."""
    body = Reading(pub(dev), seq, T0, 1, size_class, commitment)
    return Tx(dev, body, f"blob_reading({dev}, {seq}, {commitment.hex()[:8]}, {size_class})")

MANY = tuple(f"G{i:02}" for i in range(MAX_GRANTEES))

CASES: list[Case] = [
    # --- epochs and the readings sealed to them ---------------------------------------------
    Case("a reading before its stream announced any epoch is refused (1025)", [
        (admit("A", "hr1"), OK),
        (reading("hr1", 1), e.UnknownEpochError),
        (reading("hr1", 1, epoch=0), e.UnknownEpochError),
        (epoch("P"), OK),
        (reading("hr1", 1), OK),
    ]),
    Case("a reading of a future epoch is refused (1025)", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (reading("hr1", 1, epoch=2), e.UnknownEpochError),
        StreamIs("P", 1),
    ]),
    Case("after a new epoch, a reading of the past one is refused (1024), no grace", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (reading("hr1", 1), OK),
        (epoch("P", 2), OK),
        (reading("hr1", 2), e.StaleEpochError),  # the same block: no window either
        (reading("hr1", 2, epoch=2), OK),
        NEXT,
        (reading("hr1", 3), e.StaleEpochError),
        StreamIs("P", 2),
    ]),
    Case("epochs are numbered 1, 2, 3 ... without gaps or repeats (1028)", [
        (admit("A", "hr1"), OK),
        (epoch("P", 0), e.EpochOrderError),
        (epoch("P", 2), e.EpochOrderError),
        (epoch("P", 1), OK),
        (epoch("P", 1), e.EpochOrderError),
        (epoch("P", 3), e.EpochOrderError),
        (epoch("P", 2), OK),
        StreamIs("P", 2),
    ]),
    Case("each stream has its own epochs", [
        (admit("A", "hr1"), OK),
        (admit("A", "hr2", patient="Q"), OK),
        (epoch("P"), OK),
        (epoch("P", 2), OK),
        (reading("hr2", 1, epoch=2), e.UnknownEpochError),
        (epoch("Q"), OK),
        (reading("hr2", 1), OK),
        (reading("hr1", 1, epoch=2), OK),
    ]),
    Case("only a stream the ledger knows announces epochs (1023)", [
        (epoch("X"), e.UnknownStreamError),  # a key no admission named
        (epoch("A"), e.UnknownStreamError),  # an authority is nobody's stream
        (admit("A", "hr1"), OK),
        (epoch("hr1"), e.UnknownStreamError),  # a device is not a stream
        (epoch("P"), OK),
        (revoke("A", "hr1"), OK),  # P's last active device
        (epoch("P", 2), e.UnknownStreamError),
    ]),
    Case("an epoch's grantees are exactly the stream's live grants (1029)", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (grant("P", "G"), OK),
        (epoch("P", 2), e.GranteeSetError),  # G left out
        (epoch("P", 2, grantees=("G", "H")), e.GranteeSetError),  # H has no grant
        (epoch("P", 2, grantees=("H",)), e.GranteeSetError),
        (epoch("P", 2, grantees=("G",)), OK),
        StreamIs("P", 2, ("G",)),
    ]),
    Case("an expired grant leaves the next epoch's grantees, and the ledger", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (grant("P", "G", expires=now(1) + 1), OK),
        (grant("P", "H"), OK),
        NEXT,  # block 2: G's grant expired
        (epoch("P", 2, grantees=("G", "H")), e.GranteeSetError),
        HasGrant("P", "G", True),
        (epoch("P", 2, grantees=("H",)), OK),
        HasGrant("P", "G", False),
        HasGrant("P", "H", True),
        StreamIs("P", 2, ("H",)),
    ]),
    # --- grants ------------------------------------------------------------------------------
    Case("only the stream of an active device grants; a fresh key never does (1023)", [
        (grant("X", "G"), e.UnknownStreamError),
        (grant("A", "G"), e.UnknownStreamError),
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (grant("P", "G"), OK),
        (revoke("A", "hr1"), OK),  # P's last active device
        (grant("P", "H"), e.UnknownStreamError),
        (ungrant("P", "G"), OK),  # withdrawing consent is always allowed
        HasGrant("P", "G", False),
    ]),
    Case("a stream stays known while one of its devices is active, rotated included", [
        (admit("A", "hr1"), OK),
        (admit("A", "hr2"), OK),
        (epoch("P"), OK),
        (rotate("hr1", "hr1b"), OK),
        (revoke("P", "hr2"), OK),
        (grant("P", "G"), OK),
        (revoke("A", "hr1b"), OK),
        (grant("P", "H"), e.UnknownStreamError),
        (admit("A", "hr3"), OK),
        (grant("P", "H"), OK),
    ]),
    Case("a device waiting for more approvals does not make its stream known", [
        (admit("A", "hr1"), OK),
        (epoch("P"), e.UnknownStreamError),
        (admit("B", "hr1"), OK),
        (epoch("P"), OK),
    ], authorities=("A", "B"), threshold=2),
    Case("a grant names the stream's current epoch (1024 below, 1025 above)", [
        (admit("A", "hr1"), OK),
        (grant("P", "G", epoch=0), e.UnknownEpochError),  # no epoch yet
        (grant("P", "G"), e.UnknownEpochError),
        (epoch("P"), OK),
        (epoch("P", 2), OK),
        (grant("P", "G"), e.StaleEpochError),
        (grant("P", "G", epoch=3), e.UnknownEpochError),
        (grant("P", "G", epoch=2), OK),
        HasGrant("P", "G", True),
    ]),
    Case("a stream does not grant to itself", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (grant("P", "P"), e.NotPermittedError),
        HasGrant("P", "P", False),
        StreamIs("P", 1),
    ]),
    Case("a grant that expires at or before the block time is refused (1016)", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (grant("P", "G", expires=now(1)), e.ExpiredGrantError),
        (grant("P", "G", expires=now(1) - 1), e.ExpiredGrantError),
        (grant("P", "G", expires=0), e.ExpiredGrantError),
        HasGrant("P", "G", False),
        (grant("P", "G", expires=now(1) + 1), OK),
        HasGrant("P", "G", True),
    ]),
    Case(f"at most {MAX_GRANTEES} live grants: the next is refused (1033)", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        *[(grant("P", g), OK) for g in MANY],
        (grant("P", "H"), e.TooManyGranteesError),
        HasGrant("P", "H", False),
        StreamIs("P", 1, MANY),
    ]),
    Case("granting the same grantee again renews its grant and does not count twice", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        *[(grant("P", g), OK) for g in MANY],
        (grant("P", MANY[0], expires=now(1) + 5, nonce=1), OK),  # renewed, still 24
        (grant("P", MANY[0]), e.DuplicateTxError),  # the same transaction again
        StreamIs("P", 1, MANY),
        NEXT,  # block 2: the renewed grant expired, which makes room
        (grant("P", "H"), OK),
        HasGrant("P", MANY[0], False),
        StreamIs("P", 1, (*MANY[1:], "H")),
    ]),
    Case("a replayed grant is a duplicate; a new nonce renews it", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (grant("P", "G"), OK),
        (grant("P", "G"), e.DuplicateTxError),
        NEXT,
        (grant("P", "G"), e.DuplicateTxError),
        (grant("P", "G", expires=now(1) + 2 * 10**9, nonce=1), OK),
        HasGrant("P", "G", True),
        StreamIs("P", 1, ("G",)),
    ]),
    # --- revocation is the next epoch ---------------------------------------------------------
    Case("revoking a grant starts the next epoch without the revoked grantee", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (grant("P", "G"), OK),
        (grant("P", "H"), OK),
        (reading("hr1", 1), OK),
        (ungrant("P", "G", rest=("G", "H")), e.GranteeSetError),  # G still wrapped
        (ungrant("P", "G"), e.GranteeSetError),  # H left out
        (ungrant("P", "G", epoch=3, rest=("H",)), e.EpochOrderError),
        (ungrant("P", "G", epoch=1, rest=("H",)), e.EpochOrderError),
        HasGrant("P", "G", True),
        StreamIs("P", 1, ("G", "H")),
        (ungrant("P", "G", rest=("H",)), OK),
        HasGrant("P", "G", False),
        HasGrant("P", "H", True),
        StreamIs("P", 2, ("H",)),
        (reading("hr1", 2), e.StaleEpochError),  # sealed to a key G holds: refused
        (reading("hr1", 2, epoch=2), OK),
        (ungrant("P", "G", rest=("H",)), e.DuplicateTxError),
        (ungrant("P", "G", nonce=1, epoch=3, rest=("H",)), e.UnknownGrantError),
    ]),
    Case("revoking a grant that was never made, or of another stream or grantee (1015)", [
        (admit("A", "hr1"), OK),
        (admit("A", "hr2", patient="Q"), OK),
        (epoch("P"), OK),
        (ungrant("P", "G"), e.UnknownGrantError),
        (grant("P", "G"), OK),
        (ungrant("P", "X"), e.UnknownGrantError),
        (ungrant("Q", "G"), e.UnknownGrantError),
        HasGrant("P", "G", True),
        StreamIs("P", 1, ("G",)),
    ]),
    Case("a revocation also drops the grants that expired", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (grant("P", "G"), OK),
        (grant("P", "H", expires=now(1) + 1), OK),
        NEXT,
        (ungrant("P", "G", rest=("H",)), e.GranteeSetError),
        (ungrant("P", "G"), OK),
        HasGrant("P", "H", False),
        StreamIs("P", 2),
    ]),
    # --- erasure -----------------------------------------------------------------------------
    Case("a stream erases its own records without a request document", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (erase("P", request=REQUEST), e.NotPermittedError),
        (erase("P", since=5, until=10), OK),  # a range: the stream goes on
        StreamIs("P", 1),
        (reading("hr1", 1), OK),
        (erase("P", since=5, until=10), e.DuplicateTxError),
        (erase("P"), OK),
        StreamIs("P", 1, erased=True),
    ]),
    Case("an authority erases only naming the patient's request; nobody else does", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (erase("A"), e.NotPermittedError),
        (erase("X"), e.NotPermittedError),
        (erase("X", request=REQUEST), e.NotPermittedError),
        (erase("hr1"), e.NotPermittedError),  # the stream's own device
        (erase("Q", stream="P"), e.NotPermittedError),  # another stream
        StreamIs("P", 1),
        (erase("A", request=REQUEST), OK),
        StreamIs("P", 1, erased=True),
    ]),
    Case("an erasure of a stream the ledger never knew is refused (1023)", [
        (erase("A", stream="Q", request=REQUEST), e.UnknownStreamError),
        (erase("Q", stream="Q"), e.UnknownStreamError),
    ]),
    Case("erasing the whole scope drops its grants and closes the stream (1032)", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (grant("P", "G"), OK),
        (grant("P", "H"), OK),
        (reading("hr1", 1), OK),
        (erase("P", since=0, until=U64_MAX), OK),
        StreamIs("P", 1, erased=True),
        HasGrant("P", "G", False),
        HasGrant("P", "H", False),
        (reading("hr1", 2), e.ErasedStreamError),
        (grant("P", "G", nonce=1), e.ErasedStreamError),
        (epoch("P", 2), e.ErasedStreamError),
        (ungrant("P", "G", rest=()), e.UnknownGrantError),  # its grants are gone
        (erase("P", nonce=1), e.ErasedStreamError),
        (admit("A", "hr2"), e.ErasedStreamError),  # no new device records into it
        NEXT,
        (reading("hr1", 3), e.ErasedStreamError),
    ]),
    # --- blobs --------------------------------------------------------------------------------
    Case("a blob is named by one reading: another stream's copy of its commitment is refused "
         "(1035), in the same block or later", [
        (admit("A", "hr1"), OK),
        (admit("A", "hr2", patient="Q"), OK),
        (epoch("P"), OK),
        (epoch("Q"), OK),
        (blob_reading("hr1", 1, BLOB), OK),
        (blob_reading("hr2", 1, BLOB), e.CommitmentInUseError),
        (blob_reading("hr1", 2, BLOB), e.CommitmentInUseError),  # its own stream's too
        NEXT,
        (blob_reading("hr2", 2, BLOB, size_class=2), e.CommitmentInUseError),
        (blob_reading("hr2", 3, OTHER_BLOB), OK),
        (reading("hr2", 4), OK),  # a class 0 reading names no blob
    ]),
    # --- audit anchors -----------------------------------------------------------------------
    Case("a node's audit anchors start at 0 and follow each other without gap or overlap", [
        (anchor("A", "N", 1), e.AuditAnchorError),
        (anchor("A", "N", 0, count=10), OK),
        (anchor("A", "N", 0), e.AuditAnchorError),  # overlap
        (anchor("A", "N", 9), e.AuditAnchorError),  # overlap
        (anchor("A", "N", 11), e.AuditAnchorError),  # gap
        (anchor("A", "N", 10, count=5), OK),
        NEXT,
        (anchor("A", "N", 15), OK),
        (anchor("A", "M", 0), OK),  # each node its own log
    ]),
    Case("a node's log is anchored by the authority of its first anchor (1034)", [
        (anchor("X", "N", 0), e.NotAuthorityError),
        (anchor("A", "N", 0, count=10), OK),
        (anchor("B", "N", 10), e.AuditAnchorError),
        (anchor("A", "N", 10), OK),
        (anchor("B", "M", 0), OK),
    ], authorities=("A", "B")),
    Case("an authority's own node is anchored by no other authority (1034)", [
        (anchor("B", "A", 0), e.AuditAnchorError),  # else B's first anchor would keep A out
        (anchor("A", "A", 0), OK),
        (anchor("B", "B", 0), OK),
    ], authorities=("A", "B")),
    # --- what a stream key may not be ---------------------------------------------------------
    Case("a device is not admitted to a stream that is an authority's or a device's key", [
        (admit("A", "hr1", patient="A"), e.KeyInUseError),
        (admit("A", "hr1", patient="B"), e.KeyInUseError),
        (admit("A", "hr1", patient="hr1"), e.KeyInUseError),  # itself
        (admit("A", "hr2"), OK),
        (admit("A", "hr1", patient="hr2"), e.KeyInUseError),
        (admit("A", "hr1"), OK),
    ], authorities=("A", "B")),
    Case("a stream's key is not admitted as a device, nor rotated to", [
        (admit("A", "hr1"), OK),
        (admit("A", "P", patient="Q"), e.KeyInUseError),
        (rotate("hr1", "P"), e.KeyInUseError),
        (admit("A", "hr2", patient="Q"), OK),
        (revoke("A", "hr2"), OK),  # Q has no active device, but has been a stream
        (rotate("hr1", "Q"), OK),  # no record of Q's but its device count: a key again
    ]),
    Case("a stream's key does not become an authority", [
        (admit("A", "hr1"), OK),
        (add("A", "P"), e.KeyInUseError),
        (admit("A", "hr2", patient="Q"), OK),
        (epoch("Q"), OK),
        (revoke("A", "hr2"), OK),  # Q has no active device, but a record
        (add("A", "Q"), e.KeyInUseError),
        (add("A", "B"), OK),
    ]),
    Case("a stream with a record but no active device is still a stream's key", [
        (admit("A", "hr1"), OK),
        (admit("A", "hr2", patient="Q"), OK),
        (epoch("Q"), OK),
        (revoke("A", "hr2"), OK),
        (rotate("hr1", "Q"), e.KeyInUseError),
        (admit("A", "Q", patient="P"), e.KeyInUseError),
    ]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.comment for c in CASES])
def test_stream_scenario(case: Case) -> None:
    run(case)


def test_every_rule_is_exercised() -> None:
    """Every rule error but those enforced before the state (signatures, the mempool's
    capacity, decoding and sidecars: see test_sidecar.py) is the expected outcome of some
    step of the state or the stream tables."""
    expected = {o for c in [*STATE_CASES, *CASES] for s in c.steps if isinstance(s, tuple)
                for o in s[1:]}
    rules = {cls for cls in vars(e).values()
             if isinstance(cls, type) and issubclass(cls, e.RuleError) and cls is not e.RuleError}
    elsewhere = {e.BadSignatureRuleError, e.MempoolFullError, e.MalformedTxRuleError,
                 e.UnpaddedPayloadError, e.CommitmentMismatchError, e.BlobNotUploadedError}
    assert rules - elsewhere <= expected, rules - elsewhere - expected
    assert OK in expected


def first_epoch_after(steps: list) -> int:
    state = run(Case("renewal", [(admit("A", "hr1"), OK), (epoch("P"), OK), *steps]))
    record = state.grant(pub("P"), pub("G"))
    assert record is not None
    return record.first_epoch


def test_renewing_a_live_forward_grant_keeps_its_first_epoch() -> None:
    # a patient extends a clinician's grant by granting again: the clinician kept being served
    # what the live grant opened (epochs 1 and 2 here), not only readings from the renewal on
    assert first_epoch_after([
        (grant("P", "G"), OK),
        (epoch("P", 2, grantees=("G",)), OK),
        (grant("P", "G", epoch=2, nonce=1), OK),
    ]) == 1


def test_a_grant_after_expiry_or_revocation_starts_at_its_own_epoch() -> None:
    # what lapsed or was withdrawn is not opened again by a new grant
    assert first_epoch_after([
        (grant("P", "G", expires=now(1) + 1), OK),
        NEXT,  # block 2: G's grant expired
        (epoch("P", 2), OK),
        (grant("P", "G", epoch=2, nonce=1), OK),
    ]) == 2
    assert first_epoch_after([
        (grant("P", "G"), OK),
        (ungrant("P", "G"), OK),
        (grant("P", "G", epoch=2, nonce=1), OK),
    ]) == 2
    assert first_epoch_after([  # a forward grant replacing a history one is the new epoch's
        (grant("P", "G", mode=1), OK),
        (epoch("P", 2, grantees=("G",)), OK),
        (grant("P", "G", epoch=2, nonce=1), OK),
    ]) == 2
