"""A data directory whose state was built by other ledger rules is refused with what to do,
not run with a state that other nodes would not agree with. Versions 1 and 2 (readings in
clear) cannot be brought up to date in place (docs/privacy.md, migrating a chain)."""

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
        store.put_meta(META_RULES, (STATE_RULES_VERSION + 1).to_bytes(2, "big"))
        with pytest.raises(WrongChainError, match=(
                rf"another version of iomtnode \({STATE_RULES_VERSION + 1}, this one applies "
                rf"{STATE_RULES_VERSION}\): run the iomtnode that made it, or move data/ aside")):
            Chain(store, GENESIS)


@pytest.mark.parametrize("version", [1, 2])
def test_a_chain_of_rules_before_sealed_readings_is_refused_with_the_way_out(tmp_path, version):
    """Versions 1 and 2 named patients and vital kinds in clear; their blocks do not decode
    under version 3, so the state cannot be brought up to date in place."""
    with BlockStore.open(tmp_path / "data") as store:
        Chain(store, GENESIS)
    db = plyvel.DB(str(tmp_path / "data"))
    if version == 1:  # an older version wrote no record
        db.delete(META_PREFIX + META_RULES.encode())
    else:
        db.put(META_PREFIX + META_RULES.encode(), version.to_bytes(2, "big"))
    db.close()
    with BlockStore.open(tmp_path / "data") as store:
        with pytest.raises(WrongChainError, match=(
                rf"ledger rules version {version}, whose readings name patients and vital "
                rf"kinds in clear; this iomtnode applies version {STATE_RULES_VERSION}")):
            Chain(store, GENESIS)
        assert store.get_meta(META_RULES) == (
            None if version == 1 else version.to_bytes(2, "big"))  # left as it was
