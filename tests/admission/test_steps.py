"""The admission task's steps: other tasks run between chunks."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel

from iomtnode.admission.batch import CHUNK
from iomtnode.admission.inbox import FromClient
from iomtnode.core import errors as e

from .chainkit import reading, source_chain
from .servicekit import Node


@pytest.fixture
def chain(tmp_path):
    chain, _ = source_chain(tmp_path / "data", 0, 0)  # devices d1..d3 admitted
    yield chain
    chain.store.close()


async def test_other_tasks_run_between_the_chunks_of_a_step_that_verifies_nothing(
        chain, nursery):
    """A step whose chunks need no verification hop (malformed transactions, a retried
    batch refused as duplicates) still lets other tasks run after each chunk."""
    node = Node(chain)
    await nursery.start(node.admission.run)
    batch = [reading("d1", seq).raw for seq in range(1, CHUNK + 1)]
    await node.admission.submit_many(batch)  # admitted: a retry is refused as duplicates
    ticks = 0

    async def ticker() -> None:  # another task: counts its runs
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    ticks_at_chunk: list[int] = []
    real = node.inbox.handled

    def handled(from_peers: int) -> None:
        ticks_at_chunk.append(ticks)
        real(from_peers)

    node.inbox.handled = handled  # type: ignore[method-assign]
    nursery.start_soon(ticker)
    own: list = []
    node.inbox.put_own(FromClient([b"\x93junk"] * (3 * CHUNK), False, own.extend))
    hops = len(node.hops)
    with trio.fail_after(5):  # queued with the node's own: one step of four chunks
        retried = await node.admission.submit_many(batch)
    assert len(own) == 3 * CHUNK and all(isinstance(r, e.MalformedTxRuleError) for r in own)
    assert all(isinstance(r, e.DuplicateTxError) for r in retried)
    assert not any(node.hops[hops:])  # nothing was verified
    # trio runs each ready task once per round, in any order within the round: over the
    # four chunks' rounds the ticker ran at least twice (never, without a checkpoint)
    assert len(ticks_at_chunk) == 4 and ticks_at_chunk[-1] - ticks_at_chunk[0] >= 2
