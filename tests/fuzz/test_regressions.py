"""Inputs fuzzing found that crashed a decoder, each now refused with its precise error."""

from __future__ import annotations

import pytest

from iomtnode.core import codec
from iomtnode.p2p.messages import ProtocolError, decode_message
from iomtnode.sync.messages import Blocks

from . import corpus


@pytest.mark.parametrize(("entry", "reason"), [
    ([b"block"], r"blocks\[0\] must have 2 fields, got 1"),
    ([b"block", b"commit", b"extra"], r"blocks\[0\] must have 2 fields, got 3"),
    ([], r"blocks\[0\] must have 2 fields, got 0"),
    (b"block", r"blocks\[0\] must be an array, got bytes"),
    ([b"block", 7], r"blocks\[0\]\[1\] must be bytes, got int"),
])
def test_a_blocks_entry_is_exactly_a_block_and_its_commit(entry, reason):
    """Found: ``Blocks(1, [[block]])`` decoded, and sync's reader, which unpacks each entry
    in two, raised ValueError."""
    with pytest.raises(ProtocolError, match=reason):
        decode_message(codec.encode([Blocks.KIND, 1, [entry]]))
    good = next(m for m in corpus.messages() if isinstance(m, Blocks))
    assert decode_message(codec.encode([Blocks.KIND, 1, good.blocks])) == good
