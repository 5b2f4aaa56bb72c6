"""A data directory whose state was built by other ledger rules (an older iomtnode's,
without the patient index that grants need) is refused with what to do, not run with a
state that other nodes would not agree with."""

from __future__ import annotations

import plyvel
import pytest

from iomtnode.chain.chain import META_RULES, Chain, WrongChainError
from iomtnode.core.genesis import Genesis
from iomtnode.core.state import STATE_RULES_VERSION
from iomtnode.store import BlockStore
from iomtnode.store.leveldb import META_PREFIX

from ..core.helpers import CHAIN_ID, pub

GENESIS = Genesis(CHAIN_ID, 1_700_000_000_000, (pub("A"),), 1)


def test_a_state_of_other_rules_is_refused_with_the_fix(tmp_path):
    with BlockStore.open(tmp_path / "data") as store:
        Chain(store, GENESIS)
        assert store.get_meta(META_RULES) == STATE_RULES_VERSION.to_bytes(2, "big")
        Chain(store, GENESIS)  # the same rules: opens
        store.put_meta(META_RULES, (STATE_RULES_VERSION - 1).to_bytes(2, "big"))
        with pytest.raises(WrongChainError, match="move data/ aside and let the node resync"):
            Chain(store, GENESIS)


def test_a_data_directory_from_before_the_rules_version_is_refused(tmp_path):
    with BlockStore.open(tmp_path / "data") as store:
        Chain(store, GENESIS)
    db = plyvel.DB(str(tmp_path / "data"))  # as an older version left it: no record
    db.delete(META_PREFIX + META_RULES.encode())
    db.close()
    with (BlockStore.open(tmp_path / "data") as store,
          pytest.raises(WrongChainError, match=r"another version of iomtnode \(1, this one")):
        Chain(store, GENESIS)
