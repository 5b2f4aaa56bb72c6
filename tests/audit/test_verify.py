"""The offline check of a node's audit log: an honest log passes; a removed, altered or withheld
record, a gap between anchors or a wrong root fails, and says where."""

from __future__ import annotations

import dataclasses

from iomtnode.audit.record import AuditRecord, leaf, range_root, split_leaf, tag
from iomtnode.audit.verify import MAX_REPORTED_FAILURES, verify_log

NODE = b"N" * 32
MINE, THEIRS = b"M" * 32, b"T" * 32  # the patient's stream, somebody else's


def record(index: int, stream: bytes) -> AuditRecord:
    return AuditRecord(index, 1_000 + index, NODE, (b"C" * 32,), stream, b"",
                       "get_patient_records", 0, (index.to_bytes(32, "big"),),
                       index.to_bytes(16, "big"))


class Log:
    """A node's log of 25 records (every third the patient's), anchored in ranges."""

    def __init__(self, total: int = 25, ranges: tuple[int, ...] = (10, 7, 5)) -> None:
        self.records = [record(i, MINE if i % 3 == 0 else THEIRS) for i in range(total)]
        self.leaves = {r.index: leaf(r) for r in self.records}
        self.anchors = []
        first = 0
        for count in ranges:
            self.anchors.append((first, count, range_root(
                [self.leaves[i] for i in range(first, first + count)])))
            first += count

    def mine(self) -> dict[int, AuditRecord]:
        return {r.index: r for r in self.records if r.stream == MINE}

    def verify(self, records=None, streams=(MINE,)):
        return verify_log(self.anchors, self.leaves,
                          self.mine() if records is None else records, streams, node=NODE)


def test_an_honest_log_passes():
    log = Log()
    report = log.verify()
    assert report.ok, report.lines()
    assert report.anchored == 22 and report.ranges == 3
    assert report.yours == (0, 3, 6, 9, 12, 15, 18, 21)
    assert report.unanchored == (24,)  # after the last anchor: reported, not a failure
    assert "complete and unchanged" in report.lines()[0]
    assert "not anchored" in report.lines()[1]


def test_the_report_counts_in_plain_words():
    # it said "1 records in 1 anchored ranges" and "(1 problems)"
    log = Log(total=1, ranges=(1,))
    assert log.verify().lines()[0].endswith(
        "complete and unchanged: 1 record in 1 anchored range, 1 of them yours, each as the "
        "node recorded it")
    failed = log.verify(records={})  # the patient's record withheld
    assert "FAILED the check (1 problem):" in failed.lines()[0]


def test_a_removed_record_shifts_the_rest_and_fails_its_range():
    log = Log()
    del log.records[12]  # the node drops record 12 and renumbers what follows
    log.records = [dataclasses.replace(r, index=i) for i, r in enumerate(log.records)]
    log.leaves = {r.index: leaf(r) for r in log.records}
    report = log.verify()
    assert not report.ok
    assert [(f.first, f.last) for f in report.failures] == [(10, 16), (17, 21)]
    assert "removed, added or changed" in str(report.failures[0])
    assert report.lines()[-1].endswith("your record 23 is not anchored on the ledger yet; "
                                       "check again in a minute")


def test_a_missing_leaf_fails():
    log = Log()
    del log.leaves[4]
    report = log.verify(records={i: r for i, r in log.mine().items() if i != 3})
    reasons = [str(f) for f in report.failures]
    assert reasons[0].startswith("records 0 to 9: the node did not give 1 of the 10")
    assert any(r.startswith("record 3: ") and "withheld" in r for r in reasons)


def test_an_altered_record_fails():
    log = Log()
    mine = log.mine()
    mine[6] = dataclasses.replace(mine[6], code=-32025)  # the node rewrites what it served
    report = log.verify(records=mine)
    assert [(f.first, f.last) for f in report.failures] == [(6, 6)]
    assert "changed after it was recorded" in report.failures[0].reason


def test_an_altered_leaf_fails_the_root():
    log = Log()
    forged = dataclasses.replace(log.records[7], method="get_blob")
    log.leaves[7] = leaf(forged)
    report = log.verify()
    assert [(f.first, f.last) for f in report.failures] == [(0, 9)]


def test_a_withheld_record_of_the_patient_fails():
    log = Log()
    mine = log.mine()
    del mine[15]
    report = log.verify(records=mine)
    assert [str(f) for f in report.failures] == [
        "record 15: this record is about your data, but the node did not give it to you "
        "(withheld)"]
    assert "FAILED" in report.lines()[0]


def test_a_gap_between_anchors_fails():
    log = Log()
    del log.anchors[1]  # records 10..16 never anchored
    report = log.verify()
    assert [(f.first, f.last) for f in report.failures] == [(10, 16)]
    assert "gap" in report.failures[0].reason


def test_anchors_must_start_at_zero_and_not_overlap():
    log = Log()
    first, count, _ = log.anchors[1]
    log.anchors[1] = (first - 2, count + 2,
                      range_root([log.leaves[i] for i in range(first - 2, first + count)]))
    report = log.verify()
    assert [(f.first, f.last) for f in report.failures] == [(8, 9)]
    assert "overlap" in report.failures[0].reason
    late = Log()
    late.anchors = late.anchors[1:]
    assert [(f.first, f.last) for f in late.verify().failures] == [(0, 9)]


def test_other_streams_tags_do_not_match():
    log = Log()
    for i, entry in log.leaves.items():
        entry_tag, _ = split_leaf(entry)
        assert (entry_tag == tag(MINE, NODE, i)) == (i % 3 == 0)
        assert entry_tag != tag(MINE, b"X" * 32, i)  # another node's log
    # another patient sees only their own records, and nothing is asked of them for ours
    theirs = {r.index: r for r in log.records if r.stream == THEIRS}
    report = log.verify(records=theirs, streams=(THEIRS,))
    assert report.ok and len(report.yours) == 14
    # a patient with no records in this log is not told of anyone's
    assert log.verify(records={}, streams=(b"Z" * 32,)).ok


def test_a_record_from_another_node_fails():
    log = Log()
    mine = log.mine()
    mine[3] = dataclasses.replace(mine[3], node=b"X" * 32)
    report = log.verify(records=mine)
    assert [(f.first, "another node" in f.reason) for f in report.failures] == [(3, True)]


def test_failures_are_bounded():
    log = Log(total=400, ranges=(400,))
    report = log.verify(records={})
    assert len(report.failures) == MAX_REPORTED_FAILURES
    assert report.more_failures == 134 - MAX_REPORTED_FAILURES
    assert report.lines()[-1] == "  ... and 34 more"
