"""What a verifying worker process runs: signatures checked from their signed parts.

Kept apart from :mod:`iomtnode.admission.verify` so that a new worker imports only this,
the crypto module and PyNaCl (about 60 ms), not trio and the transaction codecs (about
300 ms): a syncing node starts its workers while it is already behind.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..core.crypto import BadSignatureError, Domain, verify

SignedParts = tuple[bytes, bytes, bytes, bytes] | bytes  # signer, domain, id, signature | raw


def check_parts(chain_id: str, items: Sequence[SignedParts]) -> list[str | None]:
    """Verify signatures from their parts; per item None or why not. A ``bytes`` item is
    a whole transaction (evidence, whose votes are verified too)."""
    out: list[str | None] = []
    for item in items:
        try:
            if isinstance(item, bytes):
                from ..core.tx import decode_tx  # evidence only: rare, and a heavier import

                decode_tx(item).verify(chain_id)
            else:
                signer, domain, digest, signature = item
                verify(signer, Domain(domain), chain_id, digest, signature)
        except BadSignatureError as exc:
            out.append(str(exc))
        else:
            out.append(None)
    return out


def ready() -> bool:
    """Nothing to do: calling it starts a worker and imports this module there."""
    return True
