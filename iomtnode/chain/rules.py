"""Which version of the ledger rules built a data directory's state.

The state records the :data:`~iomtnode.core.state.STATE_RULES_VERSION` that built it (meta key
:data:`META_RULES`; none: version 1). A node applies one version and refuses any other with
the way out. Version 3 (streams, epochs, sealed payloads committed by hash) changed the
transactions themselves, so a state of version 1 or 2 cannot be brought up to date in place:
its blocks do not decode under version 3 (docs/privacy.md, "Migrating a chain").
"""

from __future__ import annotations

from ..core.state import STATE_RULES_VERSION
from ..store import BlockStore

META_RULES = "state_rules"  # the STATE_RULES_VERSION the stored state was built by
RULES_RECORD = STATE_RULES_VERSION.to_bytes(2, "big")  # META_RULES of this version


def bring_rules_up_to_date(store: BlockStore) -> str | None:
    """None when the stored state is of :data:`STATE_RULES_VERSION`, else why it cannot be
    used by this node."""
    found = store.get_meta(META_RULES)
    version = int.from_bytes(found, "big") if found else 1
    if version == STATE_RULES_VERSION:
        return None
    if version < 3:
        return (f"the data directory holds a chain of ledger rules version {version}, whose "
                f"readings name patients and vital kinds in clear; this iomtnode applies "
                f"version {STATE_RULES_VERSION} (sealed, pseudonymous readings) and cannot "
                f"read it: run the iomtnode that made it, or start a new network with "
                f"`iomtnode init` (docs/privacy.md, migrating a chain)")
    return (f"the data directory's state was built by the ledger rules of another "
            f"version of iomtnode ({version}, this one applies {STATE_RULES_VERSION}): "
            f"run the iomtnode that made it, or move data/ aside and let the node "
            f"resync from peers that run this version")
