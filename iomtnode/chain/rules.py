"""Which version of the ledger rules built a data directory's state, and bringing an older one
up to date in place.

The state records the :data:`~iomtnode.core.state.STATE_RULES_VERSION` that built it (meta key
:data:`META_RULES`; none: version 1). A node applies one version; a state of an older version
it can bring up to date without replaying blocks is rewritten in place, in one batch, so every
node of a network can upgrade together without a resync (there would be no peer left to
resync from). Any other version is refused with the way out.
"""

from __future__ import annotations

import structlog

from ..core import codec
from ..core.ledger import Device
from ..core.state import STATE_RULES_VERSION, patient_index
from ..store import BlockStore

log = structlog.get_logger(__name__)

META_RULES = "state_rules"  # the STATE_RULES_VERSION the stored state was built by
RULES_RECORD = STATE_RULES_VERSION.to_bytes(2, "big")  # META_RULES of this version


def bring_rules_up_to_date(store: BlockStore) -> str | None:
    """Make the stored state one of :data:`STATE_RULES_VERSION`: None when it is (rewritten
    in place from version 1 if need be), else why it cannot be."""
    found = store.get_meta(META_RULES)
    version = int.from_bytes(found, "big") if found else 1
    if version == STATE_RULES_VERSION:
        return None
    if version != 1:
        return (f"the data directory's state was built by the ledger rules of another "
                f"version of iomtnode ({version}, this one applies {STATE_RULES_VERSION}): "
                f"run the iomtnode that made it, or move data/ aside and let the node "
                f"resync from peers that run this version")
    _rebuild_patient_index(store)
    return None


def _rebuild_patient_index(store: BlockStore) -> None:
    """Version 1 (before the patient index) to 2: the index is computed from the stored device
    records, exactly what replaying the blocks would build, and written with the new version
    in one batch."""
    devices = (Device(key[1:], *codec.decode(raw)) for key, raw in store.iter_state(b"d"))
    index = patient_index(devices)
    store.rewrite_state(index, {META_RULES: RULES_RECORD})
    log.info("state_rules_upgraded", rules_from=1, rules_to=STATE_RULES_VERSION,
             patients=len(index))
