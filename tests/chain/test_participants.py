"""Who the ledger knows (``Chain.participant``): what lifts an API client's rate limit once it
has proven the key, so a key of a client's own making must not count."""

from __future__ import annotations

from iomtnode.core.tx import RevokeDevice, sign_tx

from ..admission.chainkit import seal, source_chain
from ..core.helpers import CHAIN_ID, key, pub


def test_authorities_active_devices_and_their_streams_are_known_and_no_one_else(tmp_path):
    chain, _ = source_chain(tmp_path / "data", blocks=0, per_block=0)
    try:
        assert chain.participant(pub("A"))  # the authority
        assert chain.participant(pub("d1")) and chain.participant(pub("P"))  # device, stream
        assert not chain.participant(pub("X"))  # a fresh key
        revoke = [sign_tx(RevokeDevice(pub("A"), pub(d), "lost", 1), key("A"), CHAIN_ID)
                  for d in ("d1", "d2", "d3")]
        seal(chain, revoke[:1])
        assert not chain.participant(pub("d1"))  # revoked
        assert chain.participant(pub("P"))  # still the stream of d2 and d3
        seal(chain, revoke[1:])
        assert not chain.participant(pub("P"))  # the stream of no active device
    finally:
        chain.store.close()
