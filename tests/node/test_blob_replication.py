"""A blob uploaded to a node that never proposes reaches the authority that commits its
reading: the reading is relayed without it, and the authority fetches the blob by its
commitment from its peer (GetBlobs / Blobs over the real p2p stack, in memory)."""

from __future__ import annotations

import trio

from iomtnode.core.crypto import SigningKey
from iomtnode.core.payload import commitment, sidecar_bytes
from iomtnode.core.tx import Reading, SignedTx, sign_tx
from iomtnode.store.sidecars import BLOB_PENDING_S

from ..core.sealkit import admit, announce
from .harness import FAST, Net, start_net
from .test_bft import BFT


async def test_a_blob_uploaded_to_one_node_is_fetched_by_the_node_that_commits_it(
        tmp_path, nursery, autojump_clock):
    net = await start_net(Net(tmp_path, 2), nursery)
    authority, stream, device = net.keys[0], SigningKey.generate(), SigningKey.generate()
    async with net.client(0) as client:
        await client.call("submit_tx", tx=admit(authority, device.public, stream.public,
                                                net.chain_id).raw.hex())
        await net.wait(lambda: net.node(0).chain.device(device.public) is not None, "admitted")
        await client.call("submit_tx", tx=announce(stream, net.chain_id).raw.hex())
        await net.wait(lambda: net.node(1).chain.stream_view(stream.public) is not None
                       and net.node(1).chain.stream_view(stream.public).epoch == 1, "epoch 1")
    blob = bytes(range(256)) * (sidecar_bytes(1) // 256) + b"\x01" * (sidecar_bytes(1) % 256)
    reading = sign_tx(Reading(device.public, 1, net.now_ms(), 1, 1, commitment(blob)), device,
                      net.chain_id)
    async with net.client(1) as client:  # node 1 holds no authority key: it never proposes
        answer = await client.call("put_blob", blob=blob.hex())
        assert answer == {"commitment": commitment(blob).hex()}
        await client.call("submit_tx", tx=reading.raw.hex())
    authority_chain = net.node(0).chain
    await net.wait(lambda: authority_chain.blob(commitment(blob)) == blob, "blob fetched")
    assert authority_chain.receipt(reading.id) is not None
    assert net.node(1).chain.blob(commitment(blob)) == blob  # permanent on the uploader too
    assert net.node(0).blobs.fetched == 1


async def test_an_accepted_readings_blob_waits_while_the_reading_does(
        tmp_path, nursery, autojump_clock):
    """An ECG strip accepted while the network cannot finalize (its other authority down
    for longer than an upload waits, 600 s) kept its blob only 600 s: the next upload (or
    block) expired it, and the reading then committed with a payload no node held, for
    good. An upload stays while a reading naming it is pending here."""
    net = Net(tmp_path, 2, authorities=2, config=BFT, params=FAST)
    await start_net(net, nursery)
    authority, device = net.keys[0], SigningKey.generate()
    async with net.client(0) as client:
        await net.enroll(client, authority, device)
    await net.stop(1)  # no quorum from here: what node 0 accepts stays pending

    def strip(seq: int, fill: int) -> tuple[bytes, SignedTx]:
        blob = bytes([fill]) * sidecar_bytes(1)
        body = Reading(device.public, seq, net.now_ms(), 1, 1, commitment(blob))
        return blob, sign_tx(body, device, net.chain_id)

    blob, reading = strip(1, 1)
    async with net.client(0) as client:
        await client.call("put_blob", blob=blob.hex())
        await client.call("submit_tx", tx=reading.raw.hex())
    await trio.sleep(BLOB_PENDING_S + 1)
    later, _ = strip(2, 2)
    async with net.client(0) as client:
        await client.call("put_blob", blob=later.hex())  # an upload sweeps expired ones
    assert net.node(0).chain.holds_blob(commitment(blob))
    await net.start(nursery, 1, (net.p2p(0),))
    chain = net.node(0).chain
    await net.wait(lambda: chain.receipt(reading.id) is not None, "the reading committed")
    assert chain.blob(commitment(blob)) == blob
    assert not net.node(0).mempool._claims  # given back once committed
    assert not chain.store.sidecars._claimed
