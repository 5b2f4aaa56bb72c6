"""The sidecar of a transaction: what travels beside its signed body and is checked against
the hash the body holds, but is covered by no block hash (so a node may erase it).

==================  ======================================  ============================
kind                sidecar                                 the body holds
==================  ======================================  ============================
reading, class 0    ``salt | ciphertext`` (128 bytes)       ``commitment``
reading, class 1-2  none here: a blob in the nodes' store   ``commitment``
grant               the epoch secret sealed to the grantee  ``wrap_hash``
epoch, revoke_grant ``encode([[grantee, wrap], ...])``      ``wraps_hash``
==================  ======================================  ============================
"""

from __future__ import annotations

from . import codec
from . import fields as f
from .payload import INLINE_CLASSES, PayloadError, PayloadSizeError, wrap_hash, wraps_hash
from .payload import check_sidecar as check_reading_sidecar
from .txkinds import (
    MAX_WRAPPED_KEY_BYTES,
    EpochAnnounce,
    Grant,
    MalformedTxError,
    Reading,
    RevokeGrant,
    TxBody,
)


class SidecarError(MalformedTxError):
    """A sidecar that does not match the hash its body holds (rule code 1027)."""


class UnpaddedSidecarError(SidecarError):
    """A sidecar missing, where none belongs, or not of its size class's size (code 1026)."""


def has_sidecar(body: TxBody) -> bool:
    """Whether ``body``'s kind travels with a sidecar in its envelope."""
    if type(body) is Reading:
        return body.size_class in INLINE_CLASSES
    return type(body) in (Grant, EpochAnnounce, RevokeGrant)


def decode_wraps(sidecar: bytes) -> list[tuple[bytes, bytes]]:
    """The ``(grantee, wrap)`` pairs of an epoch's sidecar; raises :class:`SidecarError`."""
    try:
        value = codec.decode(sidecar, max_bytes=len(sidecar))
        if type(value) is not list:
            raise f.FieldError("wraps must be an array of [grantee, wrap]")
        pairs = []
        for item in value:
            f.record("wraps[]", item, 2)
            pairs.append((f.key("wraps[].grantee", item[0]),
                          f.max_bytes(MAX_WRAPPED_KEY_BYTES)("wraps[].wrap", item[1])))
    except (codec.DecodeError, f.FieldError) as exc:
        raise SidecarError(f"epoch wraps: {exc}") from None
    return pairs


def check_sidecar(body: TxBody, sidecar: bytes) -> None:
    """Raise :class:`SidecarError` unless ``sidecar`` is the one ``body`` commits to."""
    if type(body) is Reading:
        if body.size_class not in INLINE_CLASSES:
            raise UnpaddedSidecarError(
                f"a reading of size class {body.size_class} keeps its payload in the blob "
                "store, not beside the transaction")
        try:
            check_reading_sidecar(body.size_class, body.commitment, sidecar)
        except PayloadSizeError as exc:
            raise UnpaddedSidecarError(f"reading: {exc}") from None
        except PayloadError as exc:
            raise SidecarError(f"reading: {exc}") from None
    elif type(body) is Grant:
        if len(sidecar) > MAX_WRAPPED_KEY_BYTES:
            raise UnpaddedSidecarError(
                f"grant wrap of {len(sidecar)} bytes; at most {MAX_WRAPPED_KEY_BYTES}")
        if wrap_hash(sidecar) != body.wrap_hash:
            raise SidecarError("grant wrap does not hash to the grant's wrap_hash")
    elif type(body) in (EpochAnnounce, RevokeGrant):
        if wraps_hash(sidecar) != body.wraps_hash:  # type: ignore[union-attr]
            raise SidecarError("epoch wraps do not hash to the body's wraps_hash")
        grantees = [grantee for grantee, _ in decode_wraps(sidecar)]
        if grantees != list(body.grantees):  # type: ignore[union-attr]
            raise SidecarError("epoch wraps must name exactly the body's grantees, in order")
    else:
        raise UnpaddedSidecarError(f"a {type(body).__name__} has no sidecar")
