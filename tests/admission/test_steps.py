"""The admission task's steps: a chunk of clients' and one of peers' at most per step, other
tasks running between chunks."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
from trio.testing import wait_all_tasks_blocked

from iomtnode.admission.batch import CHUNK
from iomtnode.admission.inbox import FromClient, FromPeer
from iomtnode.core import errors as e
from iomtnode.core.tx import SignedTx

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


class SourcesPerHop:
    """A verifier that passes every signature and records, per hop (one per chunk), the
    source of each transaction: ``c`` a client's, ``p`` a peer's."""

    def __init__(self, node: Node, clients: list[SignedTx], peers: list[SignedTx]) -> None:
        self.source = {tx.id: "c" for tx in clients} | {tx.id: "p" for tx in peers}
        self.hops: list[str] = []
        node.mempool.verifier.verify = self.verify  # type: ignore[method-assign]

    async def verify(self, txs, *, bulk=False):
        if txs:
            self.hops.append("".join(self.source[tx.id] for tx in txs))
        await trio.lowlevel.checkpoint()
        return [None] * len(txs)


async def test_clients_and_peers_share_admission_a_chunk_of_each_per_step(chain, nursery):
    """With both lanes loaded, a step takes at most one chunk of clients' and one of peers',
    so neither waits behind more than one chunk of the other; verification still goes in
    full chunks, and the peers' progress moves at every step."""
    node = Node(chain)
    clients = [reading("d1", seq) for seq in range(1, 3 * CHUNK + 1)]
    peers = [reading("d2", seq) for seq in range(1, 3 * CHUNK + 1)]
    fake = SourcesPerHop(node, clients, peers)
    for start in range(0, len(peers), CHUNK):  # three messages
        await node.push(node.peers[0], peers[start:start + CHUNK])
    replies: list = []
    await node.inbox.put(FromClient([tx.raw for tx in clients], False, replies.append))
    steps: list[tuple[int, int]] = []  # (clients', peers') per step
    backlogs: list[int] = []  # the peers' not handled yet, at each step
    take = node.inbox.take

    async def recording_take(chunk_txs: int):
        step = await take(chunk_txs)
        steps.append((sum(type(item) is FromClient for item, _ in step),
                      sum(type(item) is FromPeer for item, _ in step)))
        backlogs.append(node.inbox.backlog())
        return step

    node.inbox.take = recording_take  # type: ignore[method-assign]
    await nursery.start(node.admission.run)
    with trio.fail_after(5):
        await node.inbox.wait_admitted(node.inbox.mark())
        while not replies:
            await node.inbox.wait_progress()
    assert steps == [(CHUNK, CHUNK)] * 3  # one chunk of each per step
    assert fake.hops == ["c" * CHUNK, "p" * CHUNK] * 3  # alternating, each hop a full chunk
    assert backlogs == [3 * CHUNK, 2 * CHUNK, CHUNK]  # peers progress at every step
    assert replies == [clients]
    assert node.mempool.oldest(6 * CHUNK) == [
        tx for start in range(0, 3 * CHUNK, CHUNK)
        for tx in clients[start:start + CHUNK] + peers[start:start + CHUNK]]


async def test_a_client_call_larger_than_a_chunk_is_answered_once_complete_in_order(
        chain, nursery):
    """A call spans steps (a chunk of it per step, peers' chunks between): its reply comes
    once, after its last transaction, with every result in order, all kept already."""
    node = Node(chain)
    call = [reading("d1", seq) for seq in range(1, 2 * CHUNK + 11)]
    call[CHUNK + 5] = reading("d1", 1)  # a copy: refused, in its place
    peers = [reading("d2", seq) for seq in range(1, 3 * CHUNK + 1)]
    fake = SourcesPerHop(node, call, peers)
    await node.push(node.peers[0], peers)
    replies: list[tuple[list, list[bool], int]] = []  # results, kept, peers' handled

    def reply(results) -> None:
        replies.append((results, [chain.store.txlog.is_pending(tx.id) for tx in call],
                        node.inbox.mark() - node.inbox.backlog()))

    await node.inbox.put(FromClient([tx.raw for tx in call], False, reply))
    await nursery.start(node.admission.run)
    with trio.fail_after(5):
        await node.inbox.wait_admitted(node.inbox.mark())
    await wait_all_tasks_blocked()
    assert len(replies) == 1  # answered once ...
    [(results, kept, peers_handled)] = replies
    assert results[:CHUNK + 5] == call[:CHUNK + 5] and results[CHUNK + 6:] == call[CHUNK + 6:]
    assert isinstance(results[CHUNK + 5], e.DuplicateTxError)  # ... complete, in order
    assert all(kept)  # durable before the reply
    assert peers_handled == 2 * CHUNK  # peers' chunks went between the call's
    # the call's chunks, peers' between them (the copy is refused before verification)
    assert [hop.count("c") for hop in fake.hops] == [CHUNK, 0, CHUNK - 1, 0, 10, 0]
    assert [len(hop) for hop in fake.hops] == [CHUNK] * 2 + [CHUNK - 1] + [CHUNK] * 2 + [10]
