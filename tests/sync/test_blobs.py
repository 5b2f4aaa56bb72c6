"""Blobs (class 1 and 2 payloads): uploaded before their reading, required for admission,
kept when the reading commits, and fetched by a node that committed the reading without its
blob from a peer that has it (GetBlobs / Blobs), checked against the commitment."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from types import SimpleNamespace

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from iomtnode.api.access import Role
from iomtnode.api.jsonrpc import INVALID_PARAMS, RpcError
from iomtnode.api.methods import ROLES, ClientApi
from iomtnode.core import errors as e
from iomtnode.core.payload import commitment
from iomtnode.core.tx import Reading, sign_tx
from iomtnode.p2p import score
from iomtnode.p2p.messages import decode_message, encode_message
from iomtnode.sync.blobs import (
    FETCH_INTERVAL_S,
    MAX_BLOBS_PER_REQUEST,
    MAX_BLOBS_REPLY_BYTES,
    RATES,
    BlobReactor,
    Blobs,
    GetBlobs,
)

from ..admission.servicekit import Node
from ..chain.streamkit import T0, blob_for, blob_reading, seal, stream_chain
from ..core.helpers import CHAIN_ID, key, pub


@dataclass
class FakePeer:
    node_id: bytes
    sent: list = field(default_factory=list)

    def send(self, msg) -> bool:
        self.sent.append(msg)
        return True


@dataclass
class WatchedPeer(FakePeer):
    changed: trio.Event = field(default_factory=trio.Event)

    def send(self, msg) -> bool:
        self.sent.append(msg)
        self.changed.set()
        self.changed = trio.Event()
        return True


@dataclass
class FakePeers:
    peer_list: list
    penalties: list = field(default_factory=list)

    def peers(self):
        return list(self.peer_list)

    def penalize(self, peer, points, reason):
        self.penalties.append((peer.node_id, points, reason))
        return False


@pytest.fixture
def chains(tmp_path):
    made = [stream_chain(tmp_path / "a"), stream_chain(tmp_path / "b")]
    yield made
    for chain in made:
        chain.store.close()


def commit_on_both(source, other, txs):
    block, commit = seal(source, txs)
    other.commit(other.check(block, commit), commit)


async def test_a_clients_blob_reading_is_admitted_only_once_its_blob_is_uploaded(chains):
    chain = chains[0]
    node = Node(chain)
    blob = blob_for("d1", 1, 2)
    tx = blob_reading("d1", 1, T0 + 5, blob, 2)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.admission.run)
        with pytest.raises(e.BlobNotUploadedError, match="blob not uploaded") as refused:
            await node.admission.submit(tx.raw)
        assert refused.value.code == 1026 and tx.id not in node.mempool
        chain.put_blob(blob, T0)
        assert (await node.admission.submit(tx.raw)).id == tx.id
        nursery.cancel_scope.cancel()


async def test_a_blob_reading_relayed_by_a_peer_is_admitted_without_its_blob(chains):
    node = Node(chains[0])  # the peer held the blob; this node fetches it once committed
    tx = blob_reading("d1", 1, T0 + 5, blob_for("d1", 1))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.admission.run)
        await node.push(node.peers[0], [tx])
        await wait_all_tasks_blocked()
        assert tx.id in node.mempool
        nursery.cancel_scope.cancel()


def test_put_blob_answers_the_commitment_or_a_precise_error(chains):
    chain = chains[0]
    api = SimpleNamespace(_chain=chain, _now_ms=lambda: T0)  # what the method uses
    blob = blob_for("d1", 1)
    answer = trio.run(partial(ClientApi.put_blob, api, blob=blob.hex()))
    assert answer == {"commitment": commitment(blob).hex()} and chain.holds_blob(commitment(blob))
    with pytest.raises(RpcError, match="size class 1 or 2") as refused:
        trio.run(partial(ClientApi.put_blob, api, blob="00" * 100))
    assert refused.value.code == INVALID_PARAMS
    assert ROLES["put_blob"] is Role.PUBLIC


def test_a_node_that_committed_a_reading_without_its_blob_fetches_it_from_a_peer(chains):
    a, b = chains
    blobs = [blob_for("d1", 1), blob_for("d2", 1, 2)]
    for blob in blobs:
        a.put_blob(blob, T0)
    commit_on_both(a, b, [blob_reading("d1", 1, T0 + 5, blobs[0]),
                          blob_reading("d2", 1, T0 + 6, blobs[1], 2)])
    assert a.missing_blobs(10) == [] and len(b.missing_blobs(10)) == 2
    peer_a, peer_b = FakePeer(b"a" * 32), FakePeer(b"b" * 32)
    serving = BlobReactor(FakePeers([peer_b]), a)
    fetching_peers = FakePeers([peer_a])
    fetching = BlobReactor(fetching_peers, b)

    async def exchange():
        assert fetching.ask()
        request = peer_a.sent.pop()
        assert isinstance(request, GetBlobs) and len(request.commitments) == 2
        await serving.receive(peer_b, request)
        await fetching.receive(peer_a, peer_b.sent.pop())

    trio.run(exchange)
    assert [b.blob(commitment(blob)) for blob in blobs] == blobs
    assert b.missing_blobs(10) == [] and not fetching.ask()
    assert fetching.fetched == 2 and fetching_peers.penalties == []


def test_a_peer_sending_a_blob_not_asked_for_is_penalised_and_nothing_is_kept(chains):
    a, b = chains
    blob = blob_for("d1", 1)
    a.put_blob(blob, T0)
    commit_on_both(a, b, [blob_reading("d1", 1, T0 + 5, blob)])
    peer = FakePeer(b"a" * 32)
    peers = FakePeers([peer])
    fetching = BlobReactor(peers, b)

    async def exchange():
        assert fetching.ask()
        wrong = bytearray(blob)
        wrong[-1] ^= 1  # not the blob whose commitment was asked
        await fetching.receive(peer, Blobs([bytes(wrong)]))

    trio.run(exchange)
    assert peers.penalties == [(peer.node_id, score.INVALID_MESSAGE,
                                "a blob that matches no commitment asked of it")]
    assert b.blob(commitment(blob)) is None and len(b.missing_blobs(10)) == 1


def test_an_answer_is_bounded_in_bytes_and_holds_only_committed_blobs(chains):
    a, _ = chains
    blobs = [blob_for("d1", seq, 2) for seq in range(1, 11)]
    for blob in blobs:
        a.put_blob(blob, T0)
    seal(a, [blob_reading("d1", seq, T0 + seq, blob, 2) for seq, blob in enumerate(blobs, 1)])
    uncommitted = blob_for("d2", 1)
    a.put_blob(uncommitted, T0)
    peer = FakePeer(b"b" * 32)
    serving = BlobReactor(FakePeers([peer]), a)
    asked = [commitment(uncommitted)] + [commitment(blob) for blob in blobs]
    trio.run(serving.receive, peer, GetBlobs(asked))
    answer = peer.sent.pop()
    assert sum(map(len, answer.blobs)) <= MAX_BLOBS_REPLY_BYTES
    assert answer.blobs == blobs[:len(answer.blobs)] and len(answer.blobs) == 7


def test_a_request_naming_a_commitment_twice_is_refused_unanswered(chains):
    # each entry was served: one blob held, asked 64 times, came back 8 times in a 1 MiB
    # answer to a 2 kB request (as GetBlockTxs([0] * 10000) did before its indexes were
    # checked)
    a, _ = chains
    blob = blob_for("d1", 1, 2)
    a.put_blob(blob, T0)
    seal(a, [blob_reading("d1", 1, T0 + 1, blob, 2)])
    peer = FakePeer(b"b" * 32)
    peers = FakePeers([peer])
    serving = BlobReactor(peers, a)
    trio.run(serving.receive, peer, GetBlobs([commitment(blob)] * MAX_BLOBS_PER_REQUEST))
    assert peer.sent == []
    [(who, points, reason)] = peers.penalties
    assert (who, points) == (peer.node_id, score.INVALID_MESSAGE)
    assert reason == (f"blobs_request_refused: {MAX_BLOBS_PER_REQUEST} commitments, "
                      f"not all different")
    trio.run(serving.receive, peer, GetBlobs([commitment(blob)]))  # once: served
    assert peer.sent == [Blobs([blob])]


def test_the_messages_decode_and_requests_are_rate_limited():
    request = GetBlobs([bytes(32)])
    assert decode_message(encode_message(request)) == request
    answer = Blobs([b"x" * 100])
    assert decode_message(encode_message(answer)) == answer
    assert GetBlobs in RATES


async def test_the_reactor_asks_after_a_commit_and_again_while_blobs_are_missing(
        chains, autojump_clock):
    a, b = chains
    blob = blob_for("d1", 1)
    a.put_blob(blob, T0)
    peer = WatchedPeer(b"a" * 32)
    fetching = BlobReactor(FakePeers([peer]), b)
    async with trio.open_nursery() as nursery:
        await nursery.start(fetching.run)
        with trio.move_on_after(FETCH_INTERVAL_S * 3):
            await trio.sleep_forever()
        assert peer.sent == []  # nothing missing: nothing asked
        commit_on_both(a, b, [blob_reading("d1", 1, T0 + 5, blob)])
        fetching.committed([])
        with trio.fail_after(FETCH_INTERVAL_S):
            while not peer.sent:
                await peer.changed.wait()
        with trio.fail_after(FETCH_INTERVAL_S * 2):
            while len(peer.sent) < 2:  # no answer came: asked again
                await peer.changed.wait()
        assert all(msg == GetBlobs([commitment(blob)]) for msg in peer.sent)
        nursery.cancel_scope.cancel()


def test_blobs_nobody_holds_do_not_keep_the_others_from_being_fetched(chains):
    """A device may commit class 1 readings naming blobs it never uploaded (through a node
    that relays them), with commitments of its choosing: a full request's worth sorting before
    every other never arrives, and the next request asks for the missing blobs after them."""
    a, b = chains
    never = [bytes(31) + bytes([i]) for i in range(MAX_BLOBS_PER_REQUEST)]
    held = blob_for("d2", 1)
    a.put_blob(held, T0)
    fakes = [sign_tx(Reading(pub("d1"), i + 1, T0 + 5, 1, 1, c), key("d1"), CHAIN_ID)
             for i, c in enumerate(never)]
    commit_on_both(a, b, [*fakes, blob_reading("d2", 1, T0 + 6, held)])
    peer = FakePeer(b"a" * 32)
    fetching = BlobReactor(FakePeers([peer]), b)
    asked = []
    for _ in range(2):
        assert fetching.ask()
        asked.append(peer.sent.pop().commitments)
    assert asked[0] == never
    assert asked[1] == [commitment(held)]
    assert fetching.ask() and peer.sent.pop().commitments == never  # and round again
