"""The chain's rule violations: one class per rule, each with a stable numeric code.

The codes are part of the client API (they are the JSON-RPC error codes of rejected
transactions), so they never change meaning. Messages say what was wrong and, where it
helps, what to do.
"""

from __future__ import annotations


class RuleError(ValueError):
    """A transaction that is well-formed and signed but breaks a rule of the chain."""

    code = 1000


class BadSignatureRuleError(RuleError):
    code = 1001


class UnknownDeviceError(RuleError):
    code = 1002


class RevokedDeviceError(RuleError):
    code = 1003


class StaleSequenceError(RuleError):
    """A reading's sequence number is below its device's anti-replay window."""

    code = 1004


class FutureTimestampError(RuleError):
    code = 1005


class NotAuthorityError(RuleError):
    code = 1006


class DuplicateAdmissionError(RuleError):
    code = 1007


class DuplicateTxError(RuleError):
    code = 1008


class NotPermittedError(RuleError):
    code = 1009


class RetiredKeyError(RuleError):
    code = 1010


class KeyInUseError(RuleError):
    code = 1011


class ConflictingAdmissionError(RuleError):
    code = 1012


class GovernanceError(RuleError):
    code = 1013


class DuplicateVoteError(RuleError):
    code = 1014


class UnknownGrantError(RuleError):
    code = 1015


class ExpiredGrantError(RuleError):
    code = 1016


class DuplicateEvidenceError(RuleError):
    """This equivocation (authority, height, round, vote type) is already on the ledger."""

    code = 1017


class InvalidEvidenceRuleError(RuleError):
    """Evidence that does not implicate a current authority or names a future height."""

    code = 1018


class MempoolFullError(RuleError):
    code = 1020


class MalformedTxRuleError(RuleError):
    """Bytes that are not a well-formed transaction (wraps the decoder's reason)."""

    code = 1021


class ReplayedSequenceError(StaleSequenceError):
    """A reading's sequence number inside the window was already used by its device."""

    code = 1022


class UnknownStreamError(RuleError):
    """A grant or epoch signed by a key that is not the stream of an active device: only a
    stream the ledger knows may let others read its records."""

    code = 1023


class StaleEpochError(RuleError):
    """A reading or grant names an epoch below its stream's current one: re-seal to the
    current epoch (``get_stream_epoch``) and resubmit with the same sequence number."""

    code = 1024


class UnknownEpochError(RuleError):
    """The stream has announced no epoch yet, or the named one is above its current one."""

    code = 1025


class UnpaddedPayloadError(RuleError):
    """A sidecar missing, where none belongs, or not exactly its size class's size."""

    code = 1026


class BlobNotUploadedError(UnpaddedPayloadError):
    """A class 1 or 2 reading whose blob this node does not hold: upload it first
    (``put_blob``), then submit the reading (code 1026, like a missing sidecar)."""


class CommitmentMismatchError(RuleError):
    """A sidecar that does not hash to the commitment (or wrap hash) its body holds."""

    code = 1027


class EpochOrderError(RuleError):
    """An epoch announcement whose number is not the stream's current epoch + 1."""

    code = 1028


class GranteeSetError(RuleError):
    """An epoch announcement whose grantees are not exactly the stream's live grants."""

    code = 1029


class ErasedStreamError(RuleError):
    """The stream's whole scope was erased: nothing more is recorded or granted in it."""

    code = 1032


class TooManyGranteesError(RuleError):
    """A grant beyond the stream's limit of live grants."""

    code = 1033


class AuditAnchorError(RuleError):
    """An audit anchor that leaves a gap or overlap in its node's log, or is signed by
    another authority than the node's first anchor."""

    code = 1034


class CommitmentInUseError(RuleError):
    """A class 1 or 2 reading naming the commitment of a blob an earlier reading named: one
    blob belongs to one reading (else another stream could claim it, or erase it by erasing
    its copy). A device re-seals with a new salt."""

    code = 1035

