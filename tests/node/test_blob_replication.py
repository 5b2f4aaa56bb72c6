"""A blob uploaded to a node that never proposes reaches the authority that commits its
reading: the reading is relayed without it, and the authority fetches the blob by its
commitment from its peer (GetBlobs / Blobs over the real p2p stack, in memory)."""

from __future__ import annotations

from iomtnode.core.crypto import SigningKey
from iomtnode.core.payload import commitment, sidecar_bytes
from iomtnode.core.tx import Reading, sign_tx

from ..core.sealkit import admit, announce
from .harness import Net, start_net


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
