"""State rules as scenario tables, after go-ethereum's clique tests.

Authorities are named A, B, C, D, E; devices hr1, hr2, ...; streams P and Q; G is a
grantee and X a stranger. Every key is derived from its name. A case is a genesis
(authorities, admission threshold) and a list of steps: a transaction with its expected
outcome (OK or the RuleError class), ``NEXT`` to seal the block and begin the next one,
``Certified(names, blocks)`` to seal that many blocks each certified by those authorities
(the precommits a block carries for its parent), or a check of the state. Each case
starts at height 1; block h has time T0 + h * BLOCK_MS.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from iomtnode.core import codec
from iomtnode.core import errors as e
from iomtnode.core.crypto import blake2b256
from iomtnode.core.evidence import make_evidence
from iomtnode.core.fields import U64_MAX
from iomtnode.core.genesis import Genesis
from iomtnode.core.governance import GOVERNANCE_DELAY_BLOCKS
from iomtnode.core.ledger import ONLINE_WINDOW_BLOCKS, BlockContext, Device, GrantRecord, State
from iomtnode.core.payload import commitment, profile_hash, wrap_hash, wraps_hash
from iomtnode.core.state import (
    ACTIVE,
    REVOKED,
    ROTATED,
    apply,
    begin_block,
    check_signer,
    genesis_state,
)
from iomtnode.core.tx import (
    FORWARD,
    HISTORY,
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
    TxBody,
    decode_tx,
    encode_body,
    sign_tx,
)
from iomtnode.core.vote import VoteType, sign_vote
from iomtnode.core.window import DEFAULT_REPLAY_WINDOW

from .helpers import CHAIN_ID, key, pub
from .sealkit import sidecar_for

T0 = 1_700_000_000_000
BLOCK_MS = 1_000
DRIFT = 30_000


def now(height: int) -> int:
    return T0 + height * BLOCK_MS


# transaction specs -------------------------------------------------------------------------


@dataclass(frozen=True)
class Tx:
    signer: str
    body: TxBody
    text: str

    def __repr__(self) -> str:
        return self.text


def reading(dev: str, seq: int, ts: int = T0, epoch: int = 1) -> Tx:
    body = Reading(pub(dev), seq, ts, epoch, 0, commitment(sidecar_for(pub(dev), seq)))
    return Tx(dev, body, f"reading({dev}, {seq}, ts={ts}, epoch={epoch})")


def admit(auth: str, dev: str, patient: str = "P", cls: str = "wearable",
          maker: str = "Acme") -> Tx:
    """An admission of ``dev`` to stream ``patient``, its profile a salted hash of class
    and maker."""
    body = AdmitDevice(pub(auth), pub(dev), pub(patient), profile_hash(bytes(16), cls, maker))
    return Tx(auth, body, f"admit({auth}, {dev}, {patient}, {cls}, {maker})")


def wraps_of(grantees: tuple[str, ...]) -> tuple[list[bytes], bytes]:
    """The ascending grantee keys and the hash of their (stand-in) wraps."""
    keys = sorted(pub(g) for g in grantees)
    return keys, wraps_hash(codec.encode([[k, b"wrap" + k[:4]] for k in keys]))


def epoch(stream: str, number: int = 1, grantees: tuple[str, ...] = ()) -> Tx:
    """Stream ``stream`` announces epoch ``number``, wrapped for ``grantees``."""
    keys, hashed = wraps_of(grantees)
    body = EpochAnnounce(pub(stream), number, blake2b256(b"x%d" % number), keys, hashed)
    return Tx(stream, body, f"epoch({stream}, {number}, {grantees})")


def revoke(by: str, dev: str, nonce: int = 0) -> Tx:
    return Tx(by, RevokeDevice(pub(by), pub(dev), "lost", nonce), f"revoke({by}, {dev}, {nonce})")


def rotate(dev: str, new: str) -> Tx:
    return Tx(dev, RotateDeviceKey(pub(dev), pub(new)), f"rotate({dev} -> {new})")


def maintain(auth: str, dev: str, action: str = "calibration", ts: int = T0) -> Tx:
    body = DeviceMaintenance(pub(auth), pub(dev), action, b"sealed note", ts)
    return Tx(auth, body, f"maintain({auth}, {dev}, {action}, {ts})")


def add(auth: str, subject: str, nonce: int = 0) -> Tx:
    body = AuthorityVote(pub(auth), pub(subject), True, nonce)
    return Tx(auth, body, f"add({auth}: +{subject}, {nonce})")


def remove(auth: str, subject: str, nonce: int = 0) -> Tx:
    body = AuthorityVote(pub(auth), pub(subject), False, nonce)
    return Tx(auth, body, f"remove({auth}: -{subject}, {nonce})")


def grant(patient: str, grantee: str, expires: int = T0 + 10**9, nonce: int = 0,
          epoch: int = 1, mode: int = FORWARD) -> Tx:
    body = Grant(pub(patient), pub(grantee), blake2b256(b"box" + pub(grantee)), expires, epoch,
                 mode, wrap_hash(b"wrap" + pub(grantee)[:4]), nonce)
    return Tx(patient, body, f"grant({patient} -> {grantee}, {expires}, epoch {epoch}, {nonce})")


def ungrant(patient: str, grantee: str, nonce: int = 0, epoch: int = 2,
            rest: tuple[str, ...] = ()) -> Tx:
    """``patient`` revokes ``grantee``'s grant and starts ``epoch`` wrapped for ``rest``."""
    keys, hashed = wraps_of(rest)
    body = RevokeGrant(pub(patient), pub(grantee), nonce, epoch, blake2b256(b"x%d" % epoch),
                       keys, hashed)
    return Tx(patient, body, f"ungrant({patient} -> {grantee}, {nonce}, epoch {epoch})")


def erase(by: str, stream: str = "P", since: int = 0, until: int = U64_MAX,
          request: bytes = b"", nonce: int = 0) -> Tx:
    body = Erase(pub(by), pub(stream), since, until, request, nonce)
    return Tx(by, body, f"erase({by}: {stream} [{since}, {until}), {request.hex()[:8]})")


def anchor(auth: str, node: str, first: int, count: int = 10) -> Tx:
    body = AuditAnchor(pub(auth), pub(node), first, count, blake2b256(b"%d" % first))
    return Tx(auth, body, f"anchor({auth}: {node} [{first}, +{count}))")


def equivocation(reporter: str, who: str, height: int = 1, round_: int = 0,
                 vote_type: VoteType = VoteType.PREVOTE, blocks: bytes = b"\x01\x02") -> Tx:
    a, b = (sign_vote(key(who), CHAIN_ID, vote_type, height, round_, bytes([x]) * 32)
            for x in blocks)
    body = ReportEvidence(pub(reporter), make_evidence(a, b).encode())
    return Tx(reporter, body,
              f"evidence({reporter}: {who} at {height}/{round_} {vote_type.name.lower()})")


# other steps -------------------------------------------------------------------------------

OK = None
NEXT = "next block"


@dataclass(frozen=True)
class Authorities:
    names: tuple[str, ...]

    def __init__(self, *names: str) -> None:
        object.__setattr__(self, "names", names)


@dataclass(frozen=True)
class Status:
    device: str
    status: str | None  # None: not registered


@dataclass(frozen=True)
class LastSeq:
    device: str
    seq: int


@dataclass(frozen=True)
class HasGrant:
    patient: str
    grantee: str
    present: bool


@dataclass(frozen=True)
class StreamIs:
    """The stream's record: current epoch, live grantees, erased."""

    stream: str
    epoch: int
    grantees: tuple[str, ...] = ()
    erased: bool = False


@dataclass(frozen=True)
class Pending:
    device: str
    approvers: tuple[str, ...]  # () = no pending admission


@dataclass(frozen=True)
class Certified:
    names: tuple[str, ...]
    blocks: int

    def __init__(self, *names: str, blocks: int = 1) -> None:
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "blocks", blocks)


Outcome = type[e.RuleError] | None
Step = (tuple[Tx, Outcome] | str | Authorities | Status | LastSeq | HasGrant | Pending
        | Certified | StreamIs)


@dataclass
class Case:
    comment: str
    steps: list[Step]
    authorities: tuple[str, ...] = ("A",)
    threshold: int = 1
    drift: int = DRIFT
    window: int = DEFAULT_REPLAY_WINDOW
    final: tuple[str, ...] | None = None  # the authority set at the end, when given


CASES: list[Case] = [
    # --- readings ----------------------------------------------------------------------------
    Case("an admitted device reads with increasing sequence numbers, gaps allowed", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (reading("hr1", 1), OK),
        (reading("hr1", 2), OK),
        (reading("hr1", 10), OK),
        LastSeq("hr1", 10),
    ]),
    Case("a reading from a device nobody admitted", [
        (reading("hr1", 1), e.UnknownDeviceError),
        LastSeq("hr1", 0),
    ]),
    Case("a replayed reading, or another with an equal sequence number, is replayed", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (reading("hr1", 1), OK),
        (reading("hr1", 1), e.ReplayedSequenceError),
        (reading("hr1", 1, ts=T0 + 5), e.ReplayedSequenceError),
        LastSeq("hr1", 1),
    ]),
    Case("sequence numbers start at 1", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (reading("hr1", 0), e.StaleSequenceError),
        (reading("hr1", 1), OK),
        (reading("hr1", 0), e.StaleSequenceError),
    ]),
    Case("a lower unused number inside the window is accepted once, also in a later block", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (reading("hr1", 5), OK),
        (reading("hr1", 4), OK),
        (reading("hr1", 4), e.ReplayedSequenceError),
        NEXT,
        (reading("hr1", 3), OK),
        (reading("hr1", 3), e.ReplayedSequenceError),
        (reading("hr1", 5), e.ReplayedSequenceError),
        (reading("hr1", 6), OK),
        LastSeq("hr1", 6),
    ]),
    Case("a number W or more below the highest is too old", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (reading("hr1", 10), OK),
        (reading("hr1", 6), e.StaleSequenceError),  # 10 - 4: outside a window of 4
        (reading("hr1", 7), OK),
        (reading("hr1", 7), e.ReplayedSequenceError),
        (reading("hr1", 20), OK),  # the window moves: 17 to 20
        (reading("hr1", 16), e.StaleSequenceError),
        (reading("hr1", 17), OK),
        NEXT,
        (reading("hr1", 10), e.StaleSequenceError),  # used, and now outside
        LastSeq("hr1", 20),
    ], window=4),
    Case("a window of 1 is strictly increasing", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (reading("hr1", 5), OK),
        (reading("hr1", 4), e.StaleSequenceError),
        (reading("hr1", 5), e.ReplayedSequenceError),
        (reading("hr1", 6), OK),
    ], window=1),
    Case("sequence numbers are per device", [
        (admit("A", "hr1"), OK),
        (admit("A", "hr2"), OK),
        (epoch("P"), OK),
        (reading("hr1", 5), OK),
        (reading("hr2", 1), OK),
        LastSeq("hr1", 5),
        LastSeq("hr2", 1),
    ]),
    Case("a timestamp exactly at the drift limit is ok, one ms beyond is not", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (reading("hr1", 1, ts=now(1) + DRIFT), OK),
        (reading("hr1", 2, ts=now(1) + DRIFT + 1), e.FutureTimestampError),
        (reading("hr1", 2, ts=0), OK),  # the past is fine (buffered readings)
        NEXT,
        (reading("hr1", 3, ts=now(1) + DRIFT + 1), OK),  # the chain's clock moved on
        (reading("hr1", 4, ts=now(2) + DRIFT + 1), e.FutureTimestampError),
    ]),
    Case("with zero drift a reading may be stamped at the block time, not after", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (reading("hr1", 1, ts=now(1)), OK),
        (reading("hr1", 2, ts=now(1) + 1), e.FutureTimestampError),
    ], drift=0),
    Case("a refused reading does not use up its sequence number", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (reading("hr1", 5, ts=now(1) + DRIFT + 1), e.FutureTimestampError),
        LastSeq("hr1", 0),
        (reading("hr1", 5), OK),
    ]),
    Case("a revoked device cannot read", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (reading("hr1", 1), OK),
        (revoke("P", "hr1"), OK),
        (reading("hr1", 2), e.RevokedDeviceError),
        NEXT,
        (reading("hr1", 3), e.RevokedDeviceError),
    ]),
    # --- admission ---------------------------------------------------------------------------
    Case("a non-authority cannot admit a device", [
        (admit("X", "hr1"), e.NotAuthorityError),
        (admit("P", "hr1"), e.NotAuthorityError),
        (admit("hr1", "hr1"), e.NotAuthorityError),
        Status("hr1", None),
        (reading("hr1", 1), e.UnknownDeviceError),
    ]),
    Case("an admitted device cannot be admitted again, by anyone, with any details", [
        (admit("A", "hr1"), OK),
        (admit("A", "hr1"), e.DuplicateAdmissionError),
        (admit("B", "hr1"), e.DuplicateAdmissionError),
        (admit("B", "hr1", patient="Q"), e.DuplicateAdmissionError),
        Status("hr1", ACTIVE),
    ], authorities=("A", "B")),
    Case("threshold 2: one approval is pending; the same authority cannot approve twice", [
        (admit("A", "hr1"), OK),
        Pending("hr1", ("A",)),
        Status("hr1", None),
        (reading("hr1", 1), e.UnknownDeviceError),
        (admit("A", "hr1"), e.DuplicateAdmissionError),
        NEXT,
        (admit("A", "hr1"), e.DuplicateAdmissionError),
        (admit("B", "hr1"), OK),  # the threshold is reached: admitted
        Pending("hr1", ()),
        Status("hr1", ACTIVE),
        (epoch("P"), OK),
        (reading("hr1", 1), OK),
        (admit("C", "hr1"), e.DuplicateAdmissionError),
    ], authorities=("A", "B", "C"), threshold=2),
    Case("threshold 2: a second approval naming other details conflicts", [
        (admit("A", "hr1"), OK),
        (admit("B", "hr1", patient="Q"), e.ConflictingAdmissionError),
        (admit("B", "hr1", cls="implant"), e.ConflictingAdmissionError),
        (admit("B", "hr1", maker="Other"), e.ConflictingAdmissionError),
        Pending("hr1", ("A",)),
        (admit("B", "hr1"), OK),
        Status("hr1", ACTIVE),
    ], authorities=("A", "B"), threshold=2),
    Case("threshold 3 of 3 needs every authority", [
        (admit("A", "hr1"), OK),
        (admit("C", "hr1"), OK),
        Pending("hr1", ("A", "C")),
        (reading("hr1", 1), e.UnknownDeviceError),
        (admit("B", "hr1"), OK),
        (epoch("P"), OK),
        (reading("hr1", 1), OK),
    ], authorities=("A", "B", "C"), threshold=3),
    Case("an authority key cannot be admitted as a device", [
        (admit("A", "B"), e.KeyInUseError),
        (admit("A", "A"), e.KeyInUseError),
        Status("B", None),
    ], authorities=("A", "B")),
    Case("a revoked or a rotated-away key cannot be admitted again", [
        (admit("A", "hr1"), OK),
        (admit("A", "hr2"), OK),
        (revoke("P", "hr1"), OK),
        (rotate("hr2", "hr2b"), OK),
        (admit("B", "hr1"), e.DuplicateAdmissionError),
        (admit("B", "hr2"), e.DuplicateAdmissionError),
        (admit("B", "hr2b"), e.DuplicateAdmissionError),
    ], authorities=("A", "B")),
    # --- revocation --------------------------------------------------------------------------
    Case("the patient revokes their device", [
        (admit("A", "hr1"), OK),
        (revoke("P", "hr1"), OK),
        Status("hr1", REVOKED),
    ]),
    Case("an authority revokes a device", [
        (admit("A", "hr1"), OK),
        (revoke("B", "hr1"), OK),
        Status("hr1", REVOKED),
    ], authorities=("A", "B")),
    Case("a stranger, another patient or the device itself may not revoke", [
        (admit("A", "hr1"), OK),
        (revoke("X", "hr1"), e.NotPermittedError),
        (revoke("Q", "hr1"), e.NotPermittedError),
        (revoke("hr1", "hr1"), e.NotPermittedError),
        Status("hr1", ACTIVE),
        (epoch("P"), OK),
        (reading("hr1", 1), OK),
    ]),
    Case("revoking twice: the same tx is a duplicate, a new one finds the device revoked", [
        (admit("A", "hr1"), OK),
        (revoke("P", "hr1", nonce=0), OK),
        (revoke("P", "hr1", nonce=0), e.DuplicateTxError),
        (revoke("P", "hr1", nonce=1), e.RevokedDeviceError),
        (revoke("A", "hr1", nonce=0), e.RevokedDeviceError),
    ]),
    Case("revoking a device that is unknown or only pending", [
        (revoke("A", "hr9"), e.UnknownDeviceError),
        (admit("A", "hr1"), OK),
        (revoke("A", "hr1"), e.UnknownDeviceError),
        Pending("hr1", ("A",)),
    ], authorities=("A", "B"), threshold=2),
    # --- rotation ----------------------------------------------------------------------------
    Case("rotation retires the old key; the new key starts at sequence 1", [
        (admit("A", "hr1"), OK),
        (epoch("P"), OK),
        (reading("hr1", 5), OK),
        (rotate("hr1", "hr1b"), OK),
        Status("hr1", ROTATED),
        Status("hr1b", ACTIVE),
        (reading("hr1", 6), e.RetiredKeyError),
        (reading("hr1b", 1), OK),
        LastSeq("hr1b", 1),
        (rotate("hr1", "hr1b"), e.RetiredKeyError),  # a replayed rotation
        (rotate("hr1", "hr1c"), e.RetiredKeyError),
        (revoke("P", "hr1"), e.RetiredKeyError),
        (revoke("P", "hr1b"), OK),  # the new key keeps the patient
        Status("hr1b", REVOKED),
    ]),
    Case("a key can be rotated again and again", [
        (admit("A", "hr1"), OK),
        (rotate("hr1", "hr1b"), OK),
        NEXT,
        (rotate("hr1b", "hr1c"), OK),
        (epoch("P"), OK),
        (reading("hr1b", 1), e.RetiredKeyError),
        (reading("hr1c", 1), OK),
        (rotate("hr1c", "hr1"), e.KeyInUseError),  # never back to a retired key
    ]),
    Case("rotation to a key that is in use", [
        (admit("A", "hr1"), OK),
        (admit("B", "hr1"), OK),
        (admit("A", "hr2"), OK),
        (admit("B", "hr2"), OK),
        (rotate("hr1", "hr2"), e.KeyInUseError),
        (rotate("hr1", "hr1"), e.KeyInUseError),
        (rotate("hr1", "A"), e.KeyInUseError),
        (admit("B", "hr3"), OK),  # pending: threshold 2
        (rotate("hr1", "hr3"), e.KeyInUseError),
        Status("hr1", ACTIVE),
        (epoch("P"), OK),
        (reading("hr1", 1), OK),
    ], authorities=("A", "B"), threshold=2),
    Case("an unknown or revoked device cannot rotate", [
        (rotate("hr1", "hr1b"), e.UnknownDeviceError),
        (admit("A", "hr1"), OK),
        (revoke("A", "hr1"), OK),
        (rotate("hr1", "hr1b"), e.RevokedDeviceError),
        Status("hr1b", None),
    ]),
    # --- maintenance -------------------------------------------------------------------------
    Case("maintenance is for authorities, on registered devices, once per record", [
        (admit("A", "hr1"), OK),
        (maintain("A", "hr1"), OK),
        (maintain("A", "hr1"), e.DuplicateTxError),
        (maintain("A", "hr1", ts=T0 + 1), OK),
        (maintain("X", "hr1"), e.NotAuthorityError),
        (maintain("P", "hr1"), e.NotAuthorityError),
        (maintain("hr1", "hr1"), e.NotAuthorityError),
        (maintain("A", "hr9"), e.UnknownDeviceError),
        (revoke("A", "hr1"), OK),
        (maintain("A", "hr1", action="decommission"), OK),  # records outlive the device
    ]),
    # --- authority votes ---------------------------------------------------------------------
    Case("one authority: its vote passes at once and takes effect two blocks later", [
        (add("A", "B"), OK),
        Authorities("A"),
        (admit("B", "hr1"), e.NotAuthorityError),
        NEXT,
        Authorities("A"),
        (admit("B", "hr1"), e.NotAuthorityError),
        NEXT,
        Authorities("A", "B"),
        (admit("B", "hr1"), OK),
    ], final=("A", "B")),
    Case("two authorities: one vote is not a majority, two are", [
        (add("A", "C"), OK),
        NEXT,
        NEXT,
        NEXT,
        Authorities("A", "B"),
        (add("B", "C"), OK),
        NEXT,
        Authorities("A", "B"),
        NEXT,
        Authorities("A", "B", "C"),
    ], authorities=("A", "B"), final=("A", "B", "C")),
    Case("three authorities: two votes pass", [
        (add("A", "D"), OK),
        (add("B", "D"), OK),
        NEXT,
        NEXT,
        Authorities("A", "B", "C", "D"),
        (add("C", "D"), e.GovernanceError),  # already in
    ], authorities=("A", "B", "C"), final=("A", "B", "C", "D")),
    Case("four authorities: two votes are not enough, three are", [
        (add("A", "E"), OK),
        (add("B", "E"), OK),
        NEXT,
        NEXT,
        Authorities("A", "B", "C", "D"),
        (add("C", "E"), OK),
        NEXT,
        NEXT,
        Authorities("A", "B", "C", "D", "E"),
    ], authorities=("A", "B", "C", "D"), final=("A", "B", "C", "D", "E")),
    Case("votes in the same block pass together; the change waits for its height", [
        NEXT,
        NEXT,  # height 3
        (remove("A", "C"), OK),
        (remove("B", "C"), OK),
        NEXT,
        Authorities("A", "B", "C"),
        (admit("C", "hr1"), OK),  # still an authority at height 4
        NEXT,
        Authorities("A", "B"),  # height 5 = 3 + GOVERNANCE_DELAY_BLOCKS
        (add("C", "X"), e.NotAuthorityError),
        (admit("C", "hr2"), e.NotAuthorityError),
    ], authorities=("A", "B", "C"), final=("A", "B")),
    Case("an authority votes itself out with the other's help", [
        (remove("A", "A"), OK),
        (remove("B", "A"), OK),
        NEXT,
        NEXT,
        Authorities("B"),
    ], authorities=("A", "B"), final=("B",)),
    Case("a vote cast twice: the same tx is a duplicate, a new nonce a duplicate vote", [
        (add("A", "D"), OK),
        (add("A", "D"), e.DuplicateTxError),
        (add("A", "D", nonce=1), e.DuplicateVoteError),
        NEXT,
        (add("A", "D", nonce=2), e.DuplicateVoteError),
        (remove("A", "B"), OK),  # a different question
        NEXT,
        NEXT,
        Authorities("A", "B", "C"),
    ], authorities=("A", "B", "C"), final=("A", "B", "C")),
    Case("adding an authority twice or removing a non-member is a governance error", [
        (add("A", "B"), e.GovernanceError),
        (add("A", "A"), e.GovernanceError),
        (remove("A", "X"), e.GovernanceError),
        (remove("A", "hr1"), e.GovernanceError),
    ], authorities=("A", "B")),
    Case("a non-authority cannot vote", [
        (add("X", "X"), e.NotAuthorityError),
        (remove("X", "A"), e.NotAuthorityError),
        (add("P", "B"), e.NotAuthorityError),
    ]),
    Case("the last authority cannot be voted out", [
        (remove("A", "A"), e.GovernanceError),
        NEXT,
        NEXT,
        Authorities("A"),
    ], final=("A",)),
    Case("nor the last one left once a removal is scheduled", [
        (remove("A", "B"), OK),
        (remove("B", "B"), OK),  # scheduled
        (remove("A", "A"), OK),  # 1 of 2: pending
        (remove("B", "A"), e.GovernanceError),  # would leave nobody
        NEXT,
        NEXT,
        Authorities("A"),
        (remove("A", "A", nonce=1), e.GovernanceError),
    ], authorities=("A", "B"), final=("A",)),
    Case("an authority may not leave to a successor that has not signed yet", [
        (add("A", "B"), OK),
        (remove("A", "A"), e.GovernanceError),  # B alone, never certified: maybe not running
        NEXT,
        NEXT,
        Authorities("A", "B"),
    ], final=("A", "B")),
    Case("... and may leave once its successor has certified a block", [
        (add("A", "B"), OK),
        NEXT,
        NEXT,
        Authorities("A", "B"),
        Certified("A", "B"),
        (remove("A", "A"), OK),  # 1 of 2: pending
        (remove("B", "A"), OK),  # B certified: B alone is a quorum that signs
        NEXT,
        NEXT,
        Authorities("B"),
        (admit("A", "hr1"), e.NotAuthorityError),
        (admit("B", "hr1"), OK),
    ], final=("B",)),
    Case("a pending vote that became a majority as the set shrank passes when re-cast", [
        (add("A", "E"), OK),  # 1 of 2: pending
        (remove("A", "B"), OK),
        (remove("B", "B"), OK),
        NEXT,
        NEXT,
        Authorities("A"),  # A's pending vote for E is now 1 of 1
        (add("A", "E", nonce=1), OK),
        NEXT,
        NEXT,
        Authorities("A", "E"),
    ], authorities=("A", "B"), final=("A", "E")),
    Case("a device key cannot become an authority", [
        (admit("A", "hr1"), OK),
        (add("A", "hr1"), e.KeyInUseError),
        Authorities("A"),
    ]),
    Case("votes of a removed authority no longer count", [
        (add("D", "E"), OK),  # 1 of 4: pending
        (remove("A", "D"), OK),
        (remove("B", "D"), OK),
        (remove("C", "D"), OK),
        NEXT,
        NEXT,
        Authorities("A", "B", "C"),
        (add("A", "E"), OK),  # with D's vote this would be 2 of 3; without, 1 of 3
        NEXT,
        NEXT,
        Authorities("A", "B", "C"),
        (add("B", "E"), OK),
        NEXT,
        NEXT,
        Authorities("A", "B", "C", "E"),
    ], authorities=("A", "B", "C", "D"), final=("A", "B", "C", "E")),
    Case("removing an offline authority is allowed; removing an online one while another "
         "is offline would stall, so it is refused", [
        Certified("A", "B", "C", blocks=ONLINE_WINDOW_BLOCKS + 1),  # D has been silent
        (remove("A", "A"), OK),
        (remove("B", "A"), OK),
        (remove("C", "A"), e.GovernanceError),  # B, C, D need 3 of 3 but D is offline
        (remove("A", "D"), OK),
        (remove("B", "D"), OK),
        (remove("C", "D"), OK),  # A, B, C need 3 of 3: all online
        NEXT,
        NEXT,
        Authorities("A", "B", "C"),
    ], authorities=("A", "B", "C", "D"), final=("A", "B", "C")),
    Case("one unproven newcomer at a time: a second addition waits for the first to sign", [
        Certified("A", "B", "C", blocks=ONLINE_WINDOW_BLOCKS + 1),
        (add("A", "E"), OK),
        (add("B", "E"), OK),
        (add("C", "E"), OK),  # 5 need 4: A, B, C and E (the ledger cannot see a new node)
        (add("A", "F"), OK),
        (add("B", "F"), OK),
        (add("C", "F"), e.GovernanceError),  # 6 need 5: A, B, C; E never signed, so F not
        NEXT,
        NEXT,
        Authorities("A", "B", "C", "D", "E"),
        Certified("A", "B", "C", "E"),
        (add("C", "F", nonce=1), OK),  # E signed: A, B, C, E and F make 5 of 6
        NEXT,
        NEXT,
        Authorities("A", "B", "C", "D", "E", "F"),
    ], authorities=("A", "B", "C", "D")),
    Case("an authority that certified recently is online; one silent longer is not", [
        Certified("A", "B", "C", "D", blocks=3),
        Certified("A", "B", "C", blocks=ONLINE_WINDOW_BLOCKS - 3),  # D certified 31 ago
        (remove("A", "C"), OK),
        (remove("B", "C"), OK),
        (remove("D", "C"), OK),  # A, B, D: need 3, all online
    ], authorities=("A", "B", "C", "D")),
    Case("a removal that is scheduled counts when the next change is judged", [
        Certified("A", "B", "C", blocks=ONLINE_WINDOW_BLOCKS + 1),  # D offline
        (remove("A", "C"), OK),
        (remove("B", "C"), OK),  # 2 of 4: pending
        (remove("C", "C"), e.GovernanceError),  # A, B, D need 3; D is offline
        (remove("A", "D"), OK),
        (remove("B", "D"), OK),
        (remove("C", "D"), OK),  # scheduled: A, B, C
        (remove("C", "C", nonce=1), OK),  # now A, B need 2 of 2: both online
        NEXT,
        NEXT,
        Authorities("A", "B"),
    ], authorities=("A", "B", "C", "D"), final=("A", "B")),
    # --- evidence ----------------------------------------------------------------------------
    Case("an authority reports another's equivocation once per height, round and type", [
        (equivocation("A", "B"), OK),
        (equivocation("C", "B"), e.DuplicateEvidenceError),  # same votes, other reporter
        (equivocation("A", "B", blocks=b"\x01\x03"), e.DuplicateEvidenceError),
        (equivocation("A", "B", vote_type=VoteType.PRECOMMIT), OK),
        (equivocation("A", "B", round_=1), OK),
        NEXT,
        (equivocation("A", "B"), e.DuplicateEvidenceError),
    ], authorities=("A", "B", "C", "D")),
    Case("evidence needs an authority reporter, an authority culprit and a past height", [
        (equivocation("X", "B"), e.NotAuthorityError),
        (equivocation("A", "X"), e.InvalidEvidenceRuleError),
        (equivocation("A", "B", height=2), e.InvalidEvidenceRuleError),  # block 1
        NEXT,
        (equivocation("A", "B", height=2), OK),
        (equivocation("A", "A"), OK),  # an authority may report itself
    ], authorities=("A", "B")),
]


# the runner --------------------------------------------------------------------------------


def _name(outcome: type[e.RuleError] | None) -> str:
    return "OK" if outcome is None else outcome.__name__


def run(case: Case) -> State:
    auths = tuple(pub(a) for a in case.authorities)
    genesis = Genesis(CHAIN_ID, T0, auths, case.threshold, case.drift, case.window)
    base: dict[bytes, bytes] = {k: v for k, v in genesis_state(genesis).items() if v is not None}
    height = 1

    def open_block(signers: tuple[bytes, ...] = ()) -> tuple[State, BlockContext]:
        state = State(base.get)
        ctx = BlockContext(height, now(height), genesis, signers)
        begin_block(state, ctx)
        return state, ctx

    state, ctx = open_block()
    for n, step in enumerate(case.steps):
        where = f"step {n} of {case.comment!r}: {step!r}"
        if step == NEXT or isinstance(step, Certified):
            for _ in range(step.blocks if isinstance(step, Certified) else 1):
                for k, v in state.changes().items():
                    if v is None:
                        base.pop(k, None)
                    else:
                        base[k] = v
                height += 1
                signers = step.names if isinstance(step, Certified) else ()
                state, ctx = open_block(tuple(pub(n) for n in signers))
        elif isinstance(step, tuple):
            spec, expected = step
            tx = decode_tx(sign_tx(spec.body, key(spec.signer), CHAIN_ID).raw)
            tx.verify(CHAIN_ID)
            before = state.changes()
            try:
                check_signer(state, tx.body)
            except e.RuleError as exc:
                signer: type[e.RuleError] | None = type(exc)
            else:
                signer = OK
            assert state.changes() == before, f"{where}: check_signer wrote"
            try:
                apply(state, tx, ctx)
            except e.RuleError as exc:
                got: type[e.RuleError] | None = type(exc)
            else:
                got = OK
            assert got is expected, f"{where}: expected {_name(expected)}, got {_name(got)}"
            # admission refuses on check_signer before the signature: only what apply refuses
            assert signer in (OK, got) or got is e.DuplicateTxError, (
                f"{where}: check_signer refused with {_name(signer)}, apply {_name(got)}")
            if expected is OK:
                assert state.changes() != before, f"{where}: applied but wrote nothing"
            else:
                assert state.changes() == before, f"{where}: a refused tx changed the state"
        elif isinstance(step, Authorities):
            got_auths = state.authorities()
            assert got_auths == tuple(pub(a) for a in step.names), where
        elif isinstance(step, Status):
            device = state.device(pub(step.device))
            assert (device.status if device else None) == step.status, where
        elif isinstance(step, LastSeq):
            assert state.last_seq(pub(step.device)) == step.seq, where
        elif isinstance(step, HasGrant):
            g = state.grant(pub(step.patient), pub(step.grantee))
            assert (g is not None) == step.present, where
        elif isinstance(step, StreamIs):
            record = state.stream(pub(step.stream))
            assert (record.epoch, record.grantees, record.erased) == (
                step.epoch, tuple(sorted(pub(g) for g in step.grantees)), step.erased), where
        elif isinstance(step, Pending):
            pending = state.pending_admission(pub(step.device))
            approvers = tuple(pending[0]) if pending else ()
            assert approvers == tuple(pub(a) for a in step.approvers), where
        else:  # pragma: no cover
            raise AssertionError(f"unknown step {step!r}")
    if case.final is not None:
        assert state.authorities() == tuple(pub(a) for a in case.final), case.comment
    return state


@pytest.mark.parametrize("case", CASES, ids=[c.comment for c in CASES])
def test_scenario(case: Case) -> None:
    run(case)


# details the tables do not show ------------------------------------------------------------


def test_governance_delay_is_two_blocks() -> None:
    assert GOVERNANCE_DELAY_BLOCKS == 2


def test_rule_error_codes_are_stable_and_distinct() -> None:
    codes = {
        e.RuleError: 1000, e.BadSignatureRuleError: 1001, e.UnknownDeviceError: 1002,
        e.RevokedDeviceError: 1003, e.StaleSequenceError: 1004, e.FutureTimestampError: 1005,
        e.NotAuthorityError: 1006, e.DuplicateAdmissionError: 1007, e.DuplicateTxError: 1008,
        e.NotPermittedError: 1009, e.RetiredKeyError: 1010, e.KeyInUseError: 1011,
        e.ConflictingAdmissionError: 1012, e.GovernanceError: 1013, e.DuplicateVoteError: 1014,
        e.UnknownGrantError: 1015, e.ExpiredGrantError: 1016, e.DuplicateEvidenceError: 1017,
        e.InvalidEvidenceRuleError: 1018, e.MempoolFullError: 1020,
        e.MalformedTxRuleError: 1021, e.ReplayedSequenceError: 1022,
        e.UnknownStreamError: 1023, e.StaleEpochError: 1024, e.UnknownEpochError: 1025,
        e.UnpaddedPayloadError: 1026, e.CommitmentMismatchError: 1027,
        e.EpochOrderError: 1028, e.GranteeSetError: 1029, e.ErasedStreamError: 1032,
        e.TooManyGranteesError: 1033, e.AuditAnchorError: 1034, e.BlobNotUploadedError: 1026,
        e.CommitmentInUseError: 1035,
    }
    for cls, code in codes.items():
        assert cls.code == code, cls.__name__
    all_rules = [c for c in vars(e).values() if isinstance(c, type) and issubclass(c, e.RuleError)]
    assert set(all_rules) == set(codes)


def test_admission_and_rotation_records() -> None:
    state = run(Case("", [
        (admit("A", "hr1", patient="Q", cls="implant", maker="Medtronic"), OK),
        NEXT,
        NEXT,
        (rotate("hr1", "hr1b"), OK),
    ]))
    profile = profile_hash(bytes(16), "implant", "Medtronic")
    assert state.device(pub("hr1")) == Device(pub("hr1"), pub("Q"), profile, ROTATED, 1,
                                              pub("hr1b"))
    assert state.device(pub("hr1b")) == Device(pub("hr1b"), pub("Q"), profile, ACTIVE, 3, b"")


def test_maintenance_and_grant_records() -> None:
    state = run(Case("", [
        (admit("A", "hr1"), OK),
        NEXT,
        (maintain("A", "hr1", action="battery_swap", ts=T0 + 7), OK),
        (epoch("P"), OK),
        (grant("P", "G", expires=T0 + 99_999, mode=HISTORY), OK),
    ]))
    assert state.get_value(b"m" + pub("hr1")) == ["battery_swap", b"sealed note", T0 + 7, 2]
    made = grant("P", "G", expires=T0 + 99_999, mode=HISTORY)
    assert state.grant(pub("P"), pub("G")) == GrantRecord(
        blake2b256(b"box" + pub("G")), HISTORY, T0 + 99_999, 1, 2,
        blake2b256(encode_body(made.body)))
    assert state.stream(pub("P")).grantees == (pub("G"),)


def test_scheduled_changes_are_recorded_and_cleared() -> None:
    state = run(Case("", [(add("A", "B"), OK)]))
    assert state.scheduled_changes() == [[1 + GOVERNANCE_DELAY_BLOCKS, pub("B"), True]]
    state = run(Case("", [(add("A", "B"), OK), NEXT, NEXT]))
    assert state.scheduled_changes() == []
    assert state.get(b"c") is None


# the State overlay -------------------------------------------------------------------------


def test_overlay_reads_through_and_records_writes() -> None:
    base = {b"k1": b"v1", b"k2": b"v2"}
    state = State(base.get)
    assert state.get(b"k1") == b"v1"
    assert state.get(b"nope") is None
    state.put_value(b"k1", [1, "x"])
    state.delete(b"k2")
    state.put_value(b"k3", b"new")
    assert state.get_value(b"k1") == [1, "x"]
    assert state.get(b"k2") is None
    assert state.get_value(b"k3") == b"new"
    assert state.changes() == {b"k1": codec.encode([1, "x"]), b"k2": None,
                               b"k3": codec.encode(b"new")}
    assert base == {b"k1": b"v1", b"k2": b"v2"}  # the base is never written


def test_changes_is_a_copy() -> None:
    state = State({}.get)
    state.put_value(b"k", 1)
    changes = state.changes()
    changes[b"other"] = b"x"
    assert state.changes() == {b"k": b"\x01"}


def test_genesis_state_holds_the_authorities() -> None:
    genesis = Genesis(CHAIN_ID, T0, (pub("B"), pub("A")), 1)
    changes = genesis_state(genesis)
    zero = (0).to_bytes(8, "big")  # both count as online from the start
    assert changes == {b"a": codec.encode([pub("B"), pub("A")]),
                       b"o" + pub("B"): zero, b"o" + pub("A"): zero}
    assert State(changes.get).authorities() == (pub("B"), pub("A"))


def test_begin_block_without_signers_or_due_changes_writes_nothing() -> None:
    genesis = Genesis(CHAIN_ID, T0, (pub("A"),), 1)
    state = State(genesis_state(genesis).get)
    begin_block(state, BlockContext(1, now(1), genesis))
    assert state.changes() == {}


def test_begin_block_records_who_certified_the_parent() -> None:
    genesis = Genesis(CHAIN_ID, T0, (pub("A"), pub("B"), pub("C")), 1)
    state = State(genesis_state(genesis).get)
    assert state.online(1) == {pub("A"), pub("B"), pub("C")}  # genesis authorities
    begin_block(state, BlockContext(40, now(40), genesis, (pub("A"), pub("C"))))
    assert state.last_certified(pub("A")) == 39 and state.last_certified(pub("B")) == 0
    assert state.online(40) == {pub("A"), pub("C")}  # B last certified 40 blocks ago
    assert state.online(32) == {pub("A"), pub("B"), pub("C")}


def test_begin_block_applies_only_due_changes_in_order() -> None:
    genesis = Genesis(CHAIN_ID, T0, (pub("A"), pub("B")), 1)
    state = State(genesis_state(genesis).get)
    state.put_value(b"c", [[5, pub("C"), True], [5, pub("A"), False], [6, pub("D"), True]])
    begin_block(state, BlockContext(4, now(4), genesis))
    assert state.authorities() == (pub("A"), pub("B"))
    begin_block(state, BlockContext(5, now(5), genesis))
    assert state.authorities() == (pub("B"), pub("C"))
    assert state.scheduled_changes() == [[6, pub("D"), True]]
    begin_block(state, BlockContext(6, now(6), genesis))
    assert state.authorities() == (pub("B"), pub("C"), pub("D"))
    assert state.get(b"c") is None


def test_begin_block_never_empties_the_authority_set() -> None:
    genesis = Genesis(CHAIN_ID, T0, (pub("A"),), 1)
    state = State(genesis_state(genesis).get)
    state.put_value(b"c", [[2, pub("A"), False]])
    begin_block(state, BlockContext(2, now(2), genesis))
    assert state.authorities() == (pub("A"),)
