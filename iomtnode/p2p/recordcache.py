"""Peer records verified already: a replayed record costs a lookup, not a signature check.

Peers relay the same signed records again and again (every exchange, every connect), and a
peer may replay a valid record at will. :class:`VerifiedRecords` remembers the records it
has verified by their exact bytes: a record seen before is returned from memory, and only
a record never seen (or forgotten) is decoded and its signature checked
(:func:`~.records.decode_record`). How many record messages a peer may send at all is the
router's rate (:data:`~.messages.PEER_RECORDS_RATE`).
"""

from __future__ import annotations

from collections import OrderedDict

from .records import PeerRecord, decode_record

RECORD_ENTRY_BYTES = 512  # memory per remembered record besides its bytes (decoded fields)
VERIFIED_RECORDS_BYTES = 2 * 1024 * 1024  # memory for records remembered as verified:
# about 3,000 records of a typical 150 bytes, 800 of the largest (2,048): more than the
# address book holds, so honest records are verified once each


class VerifiedRecords:
    """Decodes and verifies peer records of ``chain_id``, remembering those that verified
    (module doc).

    Resource handling: at most ``max_bytes`` remembered, counting each record's bytes and
    :data:`RECORD_ENTRY_BYTES`; past that the least recently seen are forgotten."""

    def __init__(self, chain_id: str, max_bytes: int = VERIFIED_RECORDS_BYTES) -> None:
        self._chain_id = chain_id
        self.max_bytes = max_bytes
        self._records: OrderedDict[bytes, PeerRecord] = OrderedDict()  # raw -> record
        self._bytes = 0
        self.replays = 0  # records answered from memory, without a signature check

    def __len__(self) -> int:
        return len(self._records)

    def decode(self, raw: bytes) -> PeerRecord:
        """The record ``raw`` holds, verified now or before. Raises
        :class:`~.records.RecordError` as :func:`~.records.decode_record` does (a record
        that did not verify is not remembered)."""
        record = self._records.get(raw)
        if record is not None:
            self._records.move_to_end(raw)
            self.replays += 1
            return record
        record = decode_record(raw, self._chain_id)
        self._records[record.raw] = record
        self._bytes += len(record.raw) + RECORD_ENTRY_BYTES
        while self._bytes > self.max_bytes and self._records:
            old, _ = self._records.popitem(last=False)
            self._bytes -= len(old) + RECORD_ENTRY_BYTES
        return record
