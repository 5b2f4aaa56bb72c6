"""get_block's reply built a piece at a time (a block of 10,000 readings was
decoded whole, viewed and encoded at once, 45 MB of a holding node's peak RSS)."""

from __future__ import annotations

import json
import tracemalloc

from iomtnode.api.jsonrpc import Dispatcher
from iomtnode.api.methods import block_json_parts, block_to_json
from iomtnode.core.block import block_parts

from ..core.blocks import block, commit, reading

TXS = 2_007  # four chunks of BLOCK_JSON_CHUNK_TXS and a part of one
_BIG = block(txs=tuple(reading(s) for s in range(1, TXS + 1)))


def test_pieces_join_to_the_block_and_its_commit() -> None:
    seal = commit(height=_BIG.height, block_hash=_BIG.hash)
    header_bytes, raws = block_parts(_BIG.encode())
    text = "".join(block_json_parts(header_bytes, raws, seal).parts)
    assert json.loads(text) == block_to_json(_BIG) | {"commit": seal.encode().hex()}
    empty = block(txs=())
    joined = "".join(block_json_parts(*block_parts(empty.encode()), None).parts)
    assert json.loads(joined) == block_to_json(empty) | {"commit": None}


def test_a_block_is_never_held_decoded_whole() -> None:
    header_bytes, raws = block_parts(_BIG.encode())
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        parts = block_json_parts(header_bytes, raws, None).parts
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    text_bytes = sum(len(p) for p in parts)
    # the pieces themselves and one chunk's objects (2.1 times the text here, less with
    # more chunks); decoding, viewing and encoding the whole block peaked at 5.4 times
    assert peak < 2.5 * text_bytes


async def test_dispatcher_splices_pieces_into_the_response() -> None:
    async def big() -> object:
        return block_json_parts(*block_parts(_BIG.encode()), None)

    dispatcher = Dispatcher({"big": big})
    reply = await dispatcher.handle_text('{"jsonrpc":"2.0","id":7,"method":"big"}')
    assert reply is not None
    assert json.loads(reply) == {"jsonrpc": "2.0", "id": 7,
                                 "result": block_to_json(_BIG) | {"commit": None}}
    batch = await dispatcher.handle_text('[{"jsonrpc":"2.0","id":"a","method":"big"}]')
    assert batch is not None and json.loads(batch)[0]["id"] == "a"
    assert await dispatcher.handle_text('{"jsonrpc":"2.0","method":"big"}') is None
