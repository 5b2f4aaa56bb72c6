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


class UnknownPatientError(RuleError):
    """A grant signed by a key that is not the patient of an active device: only a patient
    the ledger knows may let others read their records."""

    code = 1023
