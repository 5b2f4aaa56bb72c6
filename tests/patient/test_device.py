"""The device library against a scripted node: it believes only epochs its stream signed,
never moves to a lower one, re-seals a reading refused for a stale epoch with the same
sequence number (at submission or dropped later), waits for an epoch not announced yet, and
forgets a reading refused for good. Every re-sealed reading is checked by opening it."""

from __future__ import annotations

from typing import Any

import pytest

from iomtnode.core.crypto import SigningKey
from iomtnode.core.payload import commitment, reading_ad
from iomtnode.core.tx import EpochAnnounce, Reading, SignedTx, decode_tx, sign_tx
from iomtnode.patient import device as dv
from iomtnode.patient.keys import epoch_keypair, epoch_state, new_root
from iomtnode.patient.plaintext import ECG, ECG_PATCH, HEART_RATE, Plaintext
from iomtnode.patient.seal import OpenError, open_reading, open_sidecar
from iomtnode.patient.wraps import wraps_hash, wraps_sidecar

CHAIN = "iomt-test"
ROOT = new_root()
STREAM = SigningKey(bytes(range(32)))


def announcement(epoch: int, signer: SigningKey = STREAM) -> SignedTx:
    public = epoch_keypair(epoch_state(ROOT, STREAM.public, epoch))[1]
    body = EpochAnnounce(signer.public, epoch, public, [], wraps_hash([]))
    return sign_tx(body, signer, CHAIN, wraps_sidecar([]))


def secret(epoch: int) -> bytes:
    return epoch_keypair(epoch_state(ROOT, STREAM.public, epoch))[0]


class NoEpochError(Exception):
    """The node's refusal (1030) of get_stream_epoch for a stream with no epoch."""


class FakeNode:
    """Answers like a node: epochs, submissions checked against the current epoch, tx status.
    ``drop_next_with``: the next accepted reading is later dropped with this code."""

    def __init__(self, device: SigningKey, epoch: int = 1, last_seq: int = 0) -> None:
        self.device = device
        self.epoch = epoch
        self.offered: SignedTx | None = announcement(epoch) if epoch else None
        self.last_seq = last_seq
        self.status = "active"
        self.submitted: list[SignedTx] = []
        self.accepted: dict[bytes, SignedTx] = {}
        self.dropped: dict[bytes, int] = {}
        self.drop_next_with = 0
        self.refuse_code = 0
        self.after_submit: Any = None
        self.after_status: Any = None
        self.blobs: dict[bytes, bytes] = {}

    def rotate(self, epoch: int) -> None:
        self.epoch = epoch
        self.offered = announcement(epoch)

    async def authenticate(self, key: SigningKey, chain_id: str | None = None) -> list[str]:
        assert key is self.device and chain_id == CHAIN
        return [key.public.hex()]

    async def call(self, method: str, **params: Any) -> Any:
        if method == "put_blob":
            blob = bytes.fromhex(params["blob"])
            self.blobs[commitment(blob)] = blob
            return {"commitment": commitment(blob).hex()}
        if method == "get_device":
            return {"stream": STREAM.public.hex(), "status": self.status,
                    "last_seq": self.last_seq}
        if method == "get_stream_epoch":
            assert params == {"stream": STREAM.public.hex()}
            if self.offered is None:
                raise NoEpochError("this stream has no current epoch on the ledger")
            return {"announcement": self.offered.leaf_bytes.hex()}
        if method == "get_tx_status":
            out = []
            for tx_hex in params["ids"]:
                tx_id = bytes.fromhex(tx_hex)
                if tx_id in self.dropped:
                    out.append({"state": "dropped", "code": self.dropped[tx_id],
                                "reason": "dropped", "height": 3})
                elif tx_id in self.accepted:
                    out.append({"state": "committed", "height": 7})
                else:
                    out.append({"state": "unknown"})
            hook, self.after_status = self.after_status, None
            if hook is not None:
                hook()
            return out
        raise AssertionError(method)

    async def submit_binary(self, txs: list[bytes]) -> list[list[Any]]:
        answers: list[list[Any]] = []
        for raw in txs:
            tx = decode_tx(raw, complete=True)
            tx.verify(CHAIN)
            assert isinstance(tx.body, Reading)
            self.submitted.append(tx)
            if tx.body.size_class and tx.body.commitment not in self.blobs:
                answers.append([1026, "no blob"])
            elif self.refuse_code:
                answers.append([self.refuse_code, "refused"])
            elif tx.body.epoch < self.epoch:
                answers.append([1024, "stale epoch"])
            elif tx.body.epoch > self.epoch:
                answers.append([1025, "unknown epoch"])
            else:
                self.accepted[tx.id] = tx
                if self.drop_next_with:
                    self.dropped[tx.id] = self.drop_next_with
                    self.drop_next_with = 0
                answers.append([0, tx.id])
        if self.after_submit is not None:
            self.after_submit()
            self.after_submit = None
        return answers


def plain(bpm: int = 72) -> Plaintext:
    return Plaintext(HEART_RATE, 1_700_000_000_000, (bpm,))


def opens_with(tx: SignedTx, epoch: int) -> Plaintext:
    body = tx.body
    assert isinstance(body, Reading) and body.epoch == epoch
    return open_reading(CHAIN, STREAM.public, body.device, body.seq, epoch, secret(epoch),
                        tx.sidecar)


async def session(node: FakeNode) -> dv.DeviceSession:
    return await dv.DeviceSession.open(node, node.device, STREAM.public, CHAIN)


async def test_opens_at_the_ledgers_next_seq_and_epoch():
    node = FakeNode(SigningKey.generate(), epoch=3, last_seq=41)
    s = await session(node)
    assert s.next_seq == 42 and s.epoch.number == 3
    pending = s.seal(plain())
    assert pending.seq == 42 and s.next_seq == 43
    assert opens_with(pending.tx, 3) == plain()


async def test_refuses_a_device_of_another_stream_or_revoked_or_without_epoch():
    node = FakeNode(SigningKey.generate())
    node.status = "revoked"
    with pytest.raises(dv.DeviceError, match="revoked"):
        await session(node)
    node = FakeNode(SigningKey.generate(), epoch=0)
    with pytest.raises(NoEpochError):
        await session(node)
    node = FakeNode(SigningKey.generate())
    with pytest.raises(dv.DeviceError, match="not in"):
        await dv.DeviceSession.open(node, node.device, SigningKey.generate().public, CHAIN)


def test_an_announcement_must_be_the_streams_and_never_lower():
    epoch = dv.check_announcement(announcement(2).raw, STREAM.public, CHAIN, 2)
    assert epoch.number == 2 and epoch.public == epoch_keypair(epoch_state(
        ROOT, STREAM.public, 2))[1]
    other = SigningKey.generate()
    with pytest.raises(dv.DeviceError, match="another stream"):
        dv.check_announcement(announcement(2, other).raw, STREAM.public, CHAIN)
    with pytest.raises(dv.DeviceError, match="signature"):
        dv.check_announcement(announcement(2).raw, STREAM.public, "another-chain")
    with pytest.raises(dv.DeviceError, match="lower epoch"):
        dv.check_announcement(announcement(1).raw, STREAM.public, CHAIN, 2)
    with pytest.raises(dv.DeviceError, match="not an epoch"):
        dv.check_announcement(node_reading().raw, STREAM.public, CHAIN)


def node_reading() -> SignedTx:
    return sign_tx(Reading(STREAM.public, 1, 1, 1, 0, bytes(32)), STREAM, CHAIN)


async def test_a_node_offering_an_older_epoch_does_not_move_the_device_back():
    node = FakeNode(SigningKey.generate(), epoch=2)
    s = await session(node)
    node.offered = announcement(1)
    assert (await s.refresh_epoch()).number == 2
    forged = bytearray(announcement(3).leaf_bytes)
    forged[-1] ^= 1  # a bit of the stream's signature
    node.offered = decode_tx(bytes(forged))
    with pytest.raises(dv.DeviceError, match="signature"):
        await s.refresh_epoch()
    assert s.epoch.number == 2


async def test_stale_epoch_at_submission_reseals_with_the_same_seq():
    node = FakeNode(SigningKey.generate(), epoch=1, last_seq=9)
    s = await session(node)
    pending = s.seal(plain(128))
    node.rotate(2)  # a revocation committed after the device sealed
    assert await s.submit([pending]) == []
    first, again = node.submitted
    assert first.body.seq == again.body.seq == 10
    assert opens_with(again, 2) == plain(128)
    with pytest.raises(OpenError):  # the old epoch's key, which a revoked grantee may hold
        open_reading(CHAIN, STREAM.public, node.device.public, 10, 2, secret(1), again.sidecar)
    outcomes = await s.settle(5)
    assert [(o.seq, o.state, o.tx_id) for o in outcomes] == [(10, "committed", again.id)]
    assert s.pending == ()


async def test_dropped_for_a_stale_epoch_after_acceptance_is_resealed(autojump_clock):
    node = FakeNode(SigningKey.generate(), epoch=1)
    s = await session(node)
    pending = s.seal(plain())
    node.drop_next_with = 1024
    assert await s.submit([pending]) == []
    node.rotate(2)
    outcomes = await s.settle(5)
    assert len(node.submitted) == 2 and node.submitted[1].body.seq == pending.seq
    assert opens_with(node.submitted[1], 2) == plain()
    assert [o.state for o in outcomes] == ["committed"]


async def test_unknown_epoch_waits_and_asks_again(autojump_clock):
    node = FakeNode(SigningKey.generate(), epoch=2)
    s = await session(node)
    node.epoch = 1  # this node has not committed epoch 2 yet: it refuses 1025 ...
    node.offered = announcement(1)
    node.after_submit = lambda: node.rotate(2)  # ... until it does
    assert await s.submit([s.seal(plain())]) == []
    assert [tx.body.epoch for tx in node.submitted] == [2, 2]
    assert s.epoch.number == 2


async def test_a_refusal_for_good_forgets_the_plaintext():
    node = FakeNode(SigningKey.generate())
    s = await session(node)
    node.refuse_code = 1003
    refused = await s.submit([s.seal(plain())])
    assert [(o.state, o.code) for o in refused] == [("refused", 1003)]
    assert s.pending == () and len(node.submitted) == 1


async def test_gives_up_after_the_attempt_limit(autojump_clock):
    node = FakeNode(SigningKey.generate(), epoch=1)
    s = await session(node)
    node.epoch = 5  # the node keeps saying stale but offers no newer epoch
    refused = await s.submit([s.seal(plain())])
    assert [o.code for o in refused] == [1024]
    assert len(node.submitted) == dv.MAX_ATTEMPTS


async def test_a_strip_puts_its_blob_before_its_reading_and_again_when_resealed():
    node = FakeNode(SigningKey.generate(), epoch=1)
    s = await session(node)
    strip = Plaintext(ECG, 5, (250, 1, 1000), bytes(2 * 250 * 20), ECG_PATCH)
    pending = s.seal(strip)
    assert pending.tx.sidecar == b"" and pending.tx.body.size_class == 1
    node.rotate(2)
    assert await s.submit([pending]) == []
    first, again = node.submitted
    assert again.body.epoch == 2 and again.body.seq == first.body.seq
    blob = node.blobs[again.body.commitment]
    ad = reading_ad(CHAIN, STREAM.public, node.device.public, again.body.seq, 2)
    assert open_sidecar(blob, secret(2), ad) == strip


async def test_a_full_mempool_keeps_the_reading_and_sends_it_again(autojump_clock):
    node = FakeNode(SigningKey.generate(), epoch=1)
    s = await session(node)
    node.refuse_code = 1020  # the node's mempool is full: time undoes it ...

    def room_again() -> None:
        node.refuse_code = 0  # ... a block later there is room

    node.after_submit = room_again
    pending = s.seal(plain())
    assert await s.submit([pending]) == []
    assert [tx.body.seq for tx in node.submitted] == [pending.seq] * 2
    outcomes = await s.settle(5)
    assert [(o.seq, o.state) for o in outcomes] == [(pending.seq, "committed")]


async def test_a_reading_whose_blob_commitment_was_taken_is_sealed_again(autojump_clock):
    node = FakeNode(SigningKey.generate(), epoch=1)
    s = await session(node)
    node.refuse_code = 1035  # another reading named the same commitment first (a copier)

    def free_again() -> None:
        node.refuse_code = 0

    node.after_submit = free_again
    pending = s.seal(plain())
    assert await s.submit([pending]) == []
    first, second = node.submitted
    assert first.body.seq == second.body.seq == pending.seq  # same number ...
    assert first.body.commitment != second.body.commitment  # ... a new salt: a blob of its own
    outcomes = await s.settle(5)
    assert [(o.seq, o.state) for o in outcomes] == [(pending.seq, "committed")]


async def test_a_reading_the_node_lost_is_sent_again_unchanged(autojump_clock):
    node = FakeNode(SigningKey.generate(), epoch=1)
    s = await session(node)
    pending = s.seal(plain())
    assert await s.submit([pending]) == []
    original = node.submitted[0]
    del node.accepted[original.id]  # the node restarted and lost its mempool, but a peer
    # it had relayed the reading to commits it while the device sends it again: one
    # content per sequence number, so what the device follows is what the ledger holds

    def relayed_copy_commits() -> None:
        node.accepted[original.id] = original

    node.after_submit = relayed_copy_commits
    outcomes = await s.settle(5)
    assert [tx.id for tx in node.submitted] == [original.id] * 2
    assert [(o.state, o.tx_id) for o in outcomes] == [("committed", original.id)]


@pytest.mark.parametrize("where", ["committed", "pending"])
async def test_a_reading_sent_again_that_the_node_holds_already_is_not_told_refused(
        autojump_clock, where):
    """The node said unknown (it lost the reading in a restart), then, before the device
    sent it again, a peer's copy committed (or reconciliation brought it back to its
    mempool): the node answers 1008, it holds this very reading. The device told that as
    refused for good (exit 3, "the node did not take reading N") and forgot its plaintext,
    while the reading was on the ledger."""
    node = FakeNode(SigningKey.generate(), epoch=1)
    s = await session(node)
    pending = s.seal(plain())
    assert await s.submit([pending]) == []
    original = node.submitted[0]
    del node.accepted[original.id]

    def a_copy_came_back() -> None:
        node.refuse_code = 1008  # "already in block 7" or "already pending"
        if where == "committed":
            node.accepted[original.id] = original
        else:
            def committed_later() -> None:
                node.accepted[original.id] = original
            node.after_status = committed_later  # pending at the next question, then in

    node.after_status = a_copy_came_back
    outcomes = await s.settle(5)
    assert {tx.id for tx in node.submitted} == {original.id}  # the same reading each time
    assert [(o.state, o.tx_id) for o in outcomes] == [("committed", original.id)]


async def test_accepted_then_dropped_for_good_is_told_as_dropped_not_refused(autojump_clock):
    node = FakeNode(SigningKey.generate(), epoch=1)
    s = await session(node)
    node.drop_next_with = 1022  # another reading took its number first: never committed
    pending = s.seal(plain())
    assert await s.submit([pending]) == []  # accepted
    outcomes = await s.settle(5)
    assert [(o.state, o.code, o.reason) for o in outcomes] == [("dropped", 1022, "dropped")]
    assert outcomes[0].to_json() == {"seq": pending.seq, "id": pending.tx.id.hex(),
                                     "state": "dropped", "code": 1022, "reason": "dropped"}
    assert s.pending == ()


class Forgetful(dict):
    def __setitem__(self, key: Any, value: Any) -> None:
        pass


async def test_accepted_then_unknown_every_time_is_told_as_lost(autojump_clock):
    node = FakeNode(SigningKey.generate(), epoch=1)
    s = await session(node)
    node.accepted = Forgetful()  # it loses each reading it accepts (restart after restart)
    pending = s.seal(plain())
    assert await s.submit([pending]) == []
    outcomes = await s.settle(30)
    assert [(o.state, o.code) for o in outcomes] == [("lost", 0)]
    assert len(node.submitted) == dv.MAX_ATTEMPTS
