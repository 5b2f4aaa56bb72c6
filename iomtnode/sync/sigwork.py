"""What a sync's verifying worker process runs: a piece of signatures packed in one bytes
object, fixed-size records of (domain, signer, id, signature), so that handing a worker
1,024 signatures costs the trio thread one join and one bytes object to pickle, not
1,024 tuples of four.

Kept apart (it imports only :mod:`~iomtnode.core.crypto`) so a new worker starts fast, as
:mod:`iomtnode.admission.sigcheck` does.
"""

from __future__ import annotations

from ..core.crypto import KEY_BYTES, SIG_BYTES, BadSignatureError, Domain, verify

DOMAINS = tuple(Domain)  # a record's first byte: the index of its signing domain
DOMAIN_BYTE = {domain: bytes([i]) for i, domain in enumerate(DOMAINS)}
ID_BYTES = 32  # a transaction id: blake2b-256 of its body
RECORD_BYTES = 1 + KEY_BYTES + ID_BYTES + SIG_BYTES  # domain, signer, id, signature


def fits(signer: bytes, tx_id: bytes, signature: bytes) -> bool:
    """Whether these parts make a record (those of a well-formed transaction always do)."""
    return len(signer) == KEY_BYTES and len(tx_id) == ID_BYTES and len(signature) == SIG_BYTES


def check_packed(chain_id: str, packed: bytes) -> list[tuple[int, str]]:
    """Verify every record of ``packed``; the records that failed, as (index, why)."""
    failed: list[tuple[int, str]] = []
    signer_at, id_at, sig_at = 1, 1 + KEY_BYTES, 1 + KEY_BYTES + ID_BYTES
    for index, at in enumerate(range(0, len(packed), RECORD_BYTES)):
        try:
            verify(packed[at + signer_at:at + id_at], DOMAINS[packed[at]], chain_id,
                   packed[at + id_at:at + sig_at], packed[at + sig_at:at + RECORD_BYTES])
        except BadSignatureError as exc:
            failed.append((index, str(exc)))
    return failed
