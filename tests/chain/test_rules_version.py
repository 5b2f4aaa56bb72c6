"""A data directory whose state was built by other ledger rules.

Version 1 (an older iomtnode's, without the patient index that grants need) is brought to
version 2 in place at open: the index is computed from the stored devices, so a network whose
nodes all upgrade together keeps its chain (no peer would have a version 2 state to resync
from). Any other version is refused with what to do, not run with a state that other nodes
would not agree with."""

from __future__ import annotations

import plyvel
import pytest

from iomtnode.chain.chain import META_RULES, Chain, WrongChainError
from iomtnode.core.genesis import Genesis
from iomtnode.core.ledger import K_PATIENTS, State
from iomtnode.core.state import ACTIVE, REVOKED, ROTATED, STATE_RULES_VERSION, Device
from iomtnode.store import BlockStore
from iomtnode.store.leveldb import META_PREFIX, STATE_PREFIX

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


def _device(name: str, patient: str, status: str, successor: bytes = b"") -> Device:
    return Device(pub(name), pub(patient), "hr", "acme", status, 1, successor)


def test_a_state_of_version_1_gets_its_patient_index_at_open(tmp_path):
    with BlockStore.open(tmp_path / "data") as store:
        Chain(store, GENESIS)
    devices = [
        _device("p1", "P", ACTIVE), _device("p2", "P", ACTIVE), _device("p3", "P", REVOKED),
        _device("q1", "Q", ROTATED, pub("q2")), _device("q2", "Q", ACTIVE),
        _device("r1", "R", REVOKED),
    ]
    state = State(lambda key: None)
    for device in devices:
        state.put_device(device)
    db = plyvel.DB(str(tmp_path / "data"))  # as an older version left it: no index, no record
    for key, value in state.changes().items():
        assert value is not None and not key.startswith(K_PATIENTS)
        db.put(STATE_PREFIX + key, value)
    db.delete(META_PREFIX + META_RULES.encode())
    db.close()
    with BlockStore.open(tmp_path / "data") as store:
        chain = Chain(store, GENESIS)
        assert store.get_meta(META_RULES) == STATE_RULES_VERSION.to_bytes(2, "big")
        counts = {name: chain.state().patient_devices(pub(name)) for name in "PQRS"}
        assert counts == {"P": 2, "Q": 1, "R": 0, "S": 0}
        assert dict(store.iter_state(K_PATIENTS)) == {
            K_PATIENTS + pub("P"): (2).to_bytes(8, "big"),
            K_PATIENTS + pub("Q"): (1).to_bytes(8, "big")}
    with BlockStore.open(tmp_path / "data") as store:  # and it stays upgraded
        assert Chain(store, GENESIS).state().patient_devices(pub("P")) == 2
