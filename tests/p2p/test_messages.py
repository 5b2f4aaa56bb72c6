"""Message checks: lists of byte strings (batches of transactions, ids) are checked in C
loops, and only a list that fails is walked item by item, for the precise reason; the
outcome is the same as checking every item."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iomtnode.admission.messages import TxAnnounce, Txs
from iomtnode.core import codec
from iomtnode.core import fields as f
from iomtnode.core.tx import MalformedTxError, decode_tx
from iomtnode.p2p.messages import ProtocolError, decode_message, encode_message

from ..core.helpers import CHAIN_ID, key, longer_form
from ..core.sealkit import sealed_reading


def test_a_frame_in_another_form_is_the_same_message():
    # nothing hashes a frame, so its own form is not checked (a peer's msgpack library may
    # pick longer headers); what it carries is checked for its form where it is decoded
    tx = sealed_reading(key("hr1"), 1, 1, CHAIN_ID)  # [body, signature, sidecar]
    loose = longer_form(encode_message(Txs([tx.raw])))  # [5, [raw], stamp] in an array16
    loose = loose[:4] + b"\xdc\x00\x01" + loose[5:]  # and the list of txs in one too
    assert decode_message(loose) == Txs([tx.raw])
    assert decode_tx(decode_message(loose).txs[0], complete=True) == tx
    carried = decode_message(encode_message(Txs([longer_form(tx.raw)])))
    with pytest.raises(MalformedTxError, match="not canonical"):
        decode_tx(carried.txs[0])


def frame(kind: int, items: list) -> bytes:
    stamp = [0] if kind == Txs.KIND else []  # Txs.admitted_ms
    return codec.encode([kind, items, *stamp])


def test_batches_round_trip():
    for msg in (Txs([b"a" * 100, b"b" * 8192, b""]), TxAnnounce([bytes(32)] * 500)):
        assert decode_message(encode_message(msg)) == msg


@pytest.mark.parametrize(("kind", "items", "reason"), [
    (Txs.KIND, [b"ok", "text", b"ok"], r"txs\[1\] must be bytes, got str"),
    (Txs.KIND, [b"ok", b"x" * 8193], r"txs\[1\] is 8193 bytes, more than the limit of 8192"),
    (Txs.KIND, [b"ok", [b"nested"]], r"txs\[1\] must be bytes, got list"),
    (TxAnnounce.KIND, [bytes(32), bytes(31)], r"ids\[1\] must be 32 bytes, got 31 bytes"),
    (TxAnnounce.KIND, [bytes(32), 7], r"ids\[1\] must be 32 bytes, got int"),
])
def test_a_bad_item_is_named_with_the_reason(kind, items, reason):
    with pytest.raises(ProtocolError, match=reason):
        decode_message(frame(kind, items))


items = st.lists(st.one_of(st.binary(max_size=40), st.integers(0, 5), st.text(max_size=3),
                           st.none(), st.booleans()), max_size=20)


@settings(max_examples=300, deadline=None)
@given(items, st.integers(0, 40), st.integers(0, 40))
def test_checking_a_batch_at_once_agrees_with_checking_each_item(values, a, b):
    low, high = min(a, b), max(a, b)
    check = f.exact_bytes(low) if low == high else f.max_bytes(high)

    def each_passes() -> bool:
        try:
            for i, value in enumerate(values):
                check(f"x[{i}]", value)
        except f.FieldError:
            return False
        return True

    assert f.bytes_items(check, values) == each_passes()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=8), st.text(max_size=3), st.none(),
                          st.booleans(), st.integers(-(2**70), 2**70), st.floats()),
                max_size=8))
def test_encoding_a_list_refuses_exactly_what_has_no_canonical_form(values):
    bad = any(type(v) is float or (type(v) is int and not codec.INT_MIN <= v <= codec.INT_MAX)
              for v in values)
    if bad:
        with pytest.raises(codec.EncodeError):
            codec.encode(values)
    else:
        assert codec.decode(codec.encode(values)) == values
