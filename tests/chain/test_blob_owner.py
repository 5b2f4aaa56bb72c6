"""A blob belongs to the stream of the first committed reading that names it: a reading of
another stream that copies its commitment (public in every block) neither takes the blob's
consent to its own stream nor deletes the blob when that stream erases it."""

from __future__ import annotations

import pytest

from iomtnode.api.access import NO_CONSENT
from iomtnode.api.jsonrpc import RpcError
from iomtnode.api.records import RecordsApi
from iomtnode.chain.chain import BuiltBlock
from iomtnode.core.fields import U64_MAX
from iomtnode.core.payload import commitment
from iomtnode.core.tx import Erase, sign_tx

from ..admission.chainkit import seal_unchecked
from ..core.helpers import CHAIN_ID, key, pub
from ..core.sealkit import admit, announce
from .streamkit import STREAM, T0, blob_for, blob_reading, seal, stream_chain

OTHER = key("M")  # another patient's stream, with a device of its own


@pytest.fixture
def chain(tmp_path):
    chain = stream_chain(tmp_path / "data")
    seal(chain, [admit(key("A"), pub("m1"), OTHER.public, CHAIN_ID)])
    seal(chain, [announce(OTHER, CHAIN_ID)])
    yield chain
    chain.store.close()


def copied_and_victim(chain):
    blob = blob_for("d1", 1)
    chain.put_blob(blob, T0)
    seal(chain, [blob_reading("d1", 1, T0 + 10, blob)])
    # the other stream's device names the same commitment, read off the public block
    # the ledger refuses a second reading of one blob (1035); here the copy is committed as a
    # block the rule was removed from would, to test the index's own defence
    block, cert = seal_unchecked(chain, (blob_reading("m1", 1, T0 + 20, blob),))
    chain.commit(BuiltBlock(block, {}, []), cert)
    return commitment(blob), blob


def test_a_copied_commitment_leaves_the_blob_with_the_stream_that_named_it_first(chain):
    commit, blob = copied_and_victim(chain)
    assert chain.blob_owner(commit) == (STREAM.public, 1)
    assert chain.blob(commit) == blob


def test_the_copying_stream_erasing_its_reading_does_not_delete_the_blob(chain):
    commit, blob = copied_and_victim(chain)
    seal(chain, [sign_tx(Erase(OTHER.public, OTHER.public, 0, U64_MAX, b"", 1), OTHER,
                         CHAIN_ID)])
    assert chain.blob(commit) == blob
    assert chain.blob_owner(commit) == (STREAM.public, 1)


class Conn:
    def __init__(self, *keys: bytes) -> None:
        self.proven_keys = frozenset(keys)
        self.reads = 0

    async def admit_audited_read(self) -> None:
        self.reads += 1


class Trail:
    def __init__(self) -> None:
        self.codes: list[int] = []

    async def record(self, *, code: int, **call: object) -> None:
        self.codes.append(code)


async def test_the_copying_stream_is_refused_the_blob_and_its_owner_served(chain):
    commit, blob = copied_and_victim(chain)
    trail = Trail()
    api = RecordsApi(chain, trail, lambda: T0)
    with pytest.raises(RpcError) as refused:
        await api.get_blob(commit.hex(), Conn(OTHER.public))
    assert refused.value.code == NO_CONSENT
    assert await api.get_blob(commit.hex(), Conn(STREAM.public)) == {"blob": blob.hex()}
    assert trail.codes == [NO_CONSENT, 0]
