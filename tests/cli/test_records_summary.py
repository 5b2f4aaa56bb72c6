"""The line ``records fetch`` ends with on stderr."""

from __future__ import annotations

from iomtnode.cli.records import summary_line


def test_the_summary_counts_in_plain_words():
    # it said "1 readings decrypted"
    assert summary_line(1, 0) == "1 reading decrypted, 0 unreadable"
    assert summary_line(0, 5) == "0 readings decrypted, 5 unreadable"
    assert summary_line(3, 1) == "3 readings decrypted, 1 unreadable"
