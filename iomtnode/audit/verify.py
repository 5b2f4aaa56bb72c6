"""The offline check of one node's audit log against its anchors on the ledger
(``iomtnode audit --patient P --verify``, docs/privacy.md section 6).

Input, all gathered by the caller: the node's anchors ``(first, count, root)`` as the ledger
holds them, in order; every anchored leaf the node gave (index -> leaf); the records the node
gave of the caller's streams (index -> record); the caller's stream ids. The check:

1. the anchors cover the log from record 0 with no gap and no overlap;
2. each anchored range's leaves are all there and hash to the root on the ledger, so no record
   in it was removed, added or changed since it was anchored;
3. every leaf tagged with one of the caller's streams comes with its record, and each record
   given hashes to its leaf, so the node neither hid nor altered a record of the caller's.

Records after the last anchor are listed as not yet anchored: the node anchors at least every
:data:`~iomtnode.audit.record.AUDIT_ANCHOR_S` seconds, so they are at most that recent, and
nothing can be proved about them yet; on a node that is not an authority's, which cannot
anchor, they are listed as never to be anchored. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .record import AuditRecord, AuditRecordError, leaf, range_root, split_leaf, tag

MAX_REPORTED_FAILURES = 100  # failures described one by one; the rest are counted


@dataclass(frozen=True, slots=True)
class Failure:
    """One thing that does not hold: about a range of records, or about one record."""

    first: int  # the first record concerned
    last: int  # the last one (== first for one record)
    reason: str  # in plain words

    def __str__(self) -> str:
        where = f"record {self.first}" if self.first == self.last else (
            f"records {self.first} to {self.last}")
        return f"{where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What the check found for one node's log."""

    node: bytes
    anchored: int  # records covered by the anchors (0 to anchored - 1)
    ranges: int  # anchored ranges checked
    yours: tuple[int, ...]  # indices of the caller's records found and matched in anchored ranges
    unanchored: tuple[int, ...]  # indices of the caller's records after the last anchor
    failures: tuple[Failure, ...]  # at most MAX_REPORTED_FAILURES
    more_failures: int  # failures found beyond those
    anchoring: bool = True  # the node is an authority's, so it anchors its log

    @property
    def ok(self) -> bool:
        return not self.failures

    def lines(self) -> list[str]:
        """The report in plain words, one finding a line."""
        node = self.node.hex()[:16]
        if self.ok:
            out = [f"node {node}: the audit log is complete and unchanged: "
                   f"{_counted(self.anchored, 'record')} in "
                   f"{_counted(self.ranges, 'anchored range')}, {len(self.yours)} of them "
                   "yours, each as the node recorded it"]
        else:
            total = len(self.failures) + self.more_failures
            out = [f"node {node}: the audit log FAILED the check ({_counted(total, 'problem')}):"]
            out += [f"  {failure}" for failure in self.failures]
            if self.more_failures:
                out.append(f"  ... and {self.more_failures} more")
        if self.unanchored:
            first, last, n = self.unanchored[0], self.unanchored[-1], len(self.unanchored)
            which = f"record {first} is" if n == 1 else f"{n} records ({first} to {last}) are"
            if self.anchoring:
                out.append(f"node {node}: your {which} not anchored on the ledger yet; "
                           f"check again in a minute")
            else:
                out.append(f"node {node}: your {which} not anchored on the ledger and never "
                           "will be: this node is not an authority, so it cannot anchor its "
                           "log and its reads cannot be checked; read your records from "
                           "authorities' nodes")
        return out


def _counted(n: int, noun: str) -> str:
    """"1 record", "2 records"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


class _Failures:
    def __init__(self) -> None:
        self.listed: list[Failure] = []
        self.more = 0

    def add(self, first: int, last: int, reason: str) -> None:
        if len(self.listed) < MAX_REPORTED_FAILURES:
            self.listed.append(Failure(first, last, reason))
        else:
            self.more += 1


def _check_anchors(anchors: Sequence[tuple[int, int, bytes]], failures: _Failures) -> int:
    """Record the gaps and overlaps between anchors; returns where the anchors end."""
    expected = 0
    for first, count, _ in anchors:
        if count <= 0:
            failures.add(first, first, "an anchor on the ledger covers no records")
            continue
        if first > expected:
            failures.add(expected, first - 1, "no anchor on the ledger covers these records "
                         "(a gap: the node may have removed them before anchoring)")
        elif first < expected:
            failures.add(first, min(expected, first + count) - 1,
                         "two anchors on the ledger cover these records (an overlap)")
        expected = max(expected, first + count)
    return expected


def verify_log(anchors: Sequence[tuple[int, int, bytes]], leaves: Mapping[int, bytes],
               records: Mapping[int, AuditRecord], streams: Iterable[bytes], *,
               node: bytes, anchoring: bool = True) -> VerifyReport:
    """Check ``node``'s log (see the module docstring); never raises for bad input, which is
    reported as a failure. ``anchoring``: the node is an authority's (one that is not never
    anchors, so its records after the anchors are not "not anchored yet")."""
    streams = list(dict.fromkeys(streams))
    failures = _Failures()
    anchored = _check_anchors(anchors, failures)
    yours: list[int] = []
    for first, count, root in anchors:
        if count <= 0:
            continue
        last = first + count - 1
        missing = [i for i in range(first, first + count) if i not in leaves]
        if missing:
            failures.add(first, last, f"the node did not give {len(missing)} of the "
                         f"{count} entries of this range (first missing: record {missing[0]}), "
                         f"so the range cannot be checked")
        elif range_root([leaves[i] for i in range(first, first + count)]) != root:
            failures.add(first, last, "the node's log does not match the fingerprint it "
                         "anchored on the ledger: a record in this range was removed, added "
                         "or changed")
        for i in range(first, first + count):
            entry = leaves.get(i)
            if entry is None:
                continue
            parts = split_leaf(entry)
            if parts is None:
                failures.add(i, i, "the node's entry for this record is malformed")
                continue
            mine = parts[0] in {tag(stream, node, i) for stream in streams}
            rec = records.get(i)
            if rec is None:
                if mine:
                    failures.add(i, i, "this record is about your data, but the node "
                                 "did not give it to you (withheld)")
                continue
            reason = _record_mismatch(rec, i, node, entry)
            if reason is not None:
                failures.add(i, i, reason)
            elif mine:
                yours.append(i)
    unanchored = sorted(i for i, rec in records.items()
                        if i >= anchored and rec.stream in streams)
    return VerifyReport(node, anchored, sum(1 for a in anchors if a[1] > 0), tuple(yours),
                        tuple(unanchored), tuple(failures.listed), failures.more, anchoring)


def _record_mismatch(rec: AuditRecord, index: int, node: bytes, entry: bytes) -> str | None:
    """Why ``rec`` is not record ``index`` of ``node`` whose leaf is ``entry``, or None."""
    if rec.index != index:
        return f"the node gave record {rec.index} in place of this one"
    if rec.node != node:
        return "the record the node gave was written by another node"
    try:
        matches = leaf(rec) == entry
    except AuditRecordError:  # pragma: no cover - a record that exists encodes
        matches = False
    if not matches:
        return ("the record the node gave differs from the one it anchored on the ledger "
                "(it was changed after it was recorded)")
    return None
