"""A class 1 or 2 reading's commitment names one blob of one reading: another stream's
device that copies a committed reading's commitment (public in its body) into a reading of
its own is refused, so it can neither claim the blob for its stream (and read it through
the API by its own consent), nor erase it by erasing its own copy, nor, once the blob was
erased, make the nodes fetch it back."""

from __future__ import annotations

import pytest

from iomtnode.core import errors as e
from iomtnode.core.block import sign_commit
from iomtnode.core.fields import U64_MAX
from iomtnode.core.payload import commitment
from iomtnode.core.tx import Erase, Reading, sign_tx

from ..core.helpers import CHAIN_ID, key, pub
from ..core.sealkit import admit, announce
from .streamkit import STREAM, T0, blob_for, blob_reading, erase, seal, stream_chain

OTHER = key("S2")  # another patient's stream, with a device of its own


@pytest.fixture
def chain(tmp_path):
    chain = stream_chain(tmp_path / "data")
    seal(chain, [admit(key("A"), pub("x1"), OTHER.public, CHAIN_ID)])
    seal(chain, [announce(OTHER, CHAIN_ID)])
    yield chain
    chain.store.close()


def test_a_copied_commitment_is_refused_and_the_blob_stays_its_streams(chain):
    blob = blob_for("d1", 1)
    chain.put_blob(blob, T0)
    seal(chain, [blob_reading("d1", 1, T0 + 1, blob)])
    copy = sign_tx(Reading(pub("x1"), 1, T0 + 2, 1, 1, commitment(blob)), key("x1"), CHAIN_ID)
    built = chain.build([copy], pub("A"), T0 + 1000 * (chain.height + 1))
    assert [type(exc) for _, exc in built.rejected] == [e.CommitmentInUseError]
    assert built.rejected[0][1].code == 1035
    # accepted, it made the blob the copier's stream's, and the copier's erasure deleted it
    commit = sign_commit([key("A")], CHAIN_ID, built.block.height, 0, built.block.hash)
    chain.commit(built, commit)
    seal(chain, [sign_tx(Erase(OTHER.public, OTHER.public, 0, U64_MAX, b"", 1), OTHER,
                         CHAIN_ID)])
    assert chain.blob(commitment(blob)) == blob
    assert [r.blob for r in chain.stream_readings(STREAM.public, 0, U64_MAX, b"", 10)] == [True]


def test_two_readings_of_one_block_cannot_name_one_blob(chain):
    blob = blob_for("d1", 1)
    chain.put_blob(blob, T0)
    first = blob_reading("d1", 1, T0 + 1, blob)
    copy = sign_tx(Reading(pub("x1"), 1, T0 + 2, 1, 1, commitment(blob)), key("x1"), CHAIN_ID)
    built = chain.build([first, copy], pub("A"), T0 + 1000 * (chain.height + 1))
    assert [tx.id for tx in built.block.txs] == [first.id]
    assert [tx.id for tx, _ in built.rejected] == [copy.id]


def test_an_erased_blob_is_not_named_again_so_no_node_fetches_it_back(chain):
    """After its reading's erasure, a copy of its commitment would have made every node mark
    the blob missing and fetch it back from any peer that still held it (one that had not
    committed the erasure yet), for the copying stream."""
    blob = blob_for("d1", 1)
    chain.put_blob(blob, T0)
    seal(chain, [blob_reading("d1", 1, T0 + 1, blob)])
    seal(chain, [erase()])
    copy = sign_tx(Reading(pub("x1"), 1, T0 + 2, 1, 1, commitment(blob)), key("x1"), CHAIN_ID)
    built = chain.build([copy], pub("A"), T0 + 1000 * (chain.height + 1))
    assert [type(exc) for _, exc in built.rejected] == [e.CommitmentInUseError]
    commit = sign_commit([key("A")], CHAIN_ID, built.block.height, 0, built.block.hash)
    chain.commit(built, commit)
    assert chain.missing_blobs(10) == [] and not chain.put_fetched_blob(blob)
    assert chain.blob(commitment(blob)) is None
