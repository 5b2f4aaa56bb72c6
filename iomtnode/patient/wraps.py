"""Wrapping an epoch's key for a grantee (docs/privacy.md, section 3).

A wrap is ``crypto_box_seal(encode([stream, epoch, mode, secret]), B)``: a sealed box to the
grantee's box key ``B``, holding ``x_e`` (mode :data:`FORWARD`: this epoch alone) or ``t_e``
(mode :data:`HISTORY`: this epoch and every earlier one, by key regression). The grantee
checks that stream, epoch and mode are those of the signed grant or epoch announcement that
carried the wrap, so a wrap cannot be replayed beside another transaction.
"""

from __future__ import annotations

import itertools

import nacl.bindings
import nacl.exceptions

from iomtnode.core import codec, payload
from iomtnode.core.crypto import KEY_BYTES
from iomtnode.core.txkinds import MAX_WRAPPED_KEY_BYTES

from .keys import (
    EPOCHS_PER_STREAM,
    STATE_BYTES,
    X25519_BYTES,
    epoch_keypair,
    epoch_state,
)

FORWARD, HISTORY = 0, 1
MODES = (FORWARD, HISTORY)
MODE_NAMES = {FORWARD: "forward", HISTORY: "history"}
SEALED_BOX_OVERHEAD_BYTES = 48  # an ephemeral X25519 key and a tag


class WrapError(ValueError):
    """A wrap that does not open with this box key, or names another stream, epoch or mode."""


def _check_fields(stream: bytes, epoch: int, mode: int) -> None:
    if len(stream) != KEY_BYTES:
        raise WrapError(f"a stream is its {KEY_BYTES}-byte public key")
    if type(epoch) is not int or not 1 <= epoch <= EPOCHS_PER_STREAM:
        raise WrapError(f"epoch {epoch} is not in 1..{EPOCHS_PER_STREAM}")
    if mode not in MODES:
        raise WrapError(f"mode {mode} is not forward ({FORWARD}) or history ({HISTORY})")


def make_wrap(stream: bytes, epoch: int, mode: int, secret: bytes, box_public: bytes) -> bytes:
    """``secret`` (``x_e`` for forward, ``t_e`` for history) sealed to ``box_public``."""
    _check_fields(stream, epoch, mode)
    if len(secret) != STATE_BYTES or len(box_public) != X25519_BYTES:
        raise WrapError(f"a wrapped secret and a box key are {STATE_BYTES} bytes")
    if box_public == bytes(X25519_BYTES):
        raise WrapError("the box key is all zero")
    wrap = nacl.bindings.crypto_box_seal(codec.encode([stream, epoch, mode, secret]),
                                         box_public)
    assert len(wrap) <= MAX_WRAPPED_KEY_BYTES
    return wrap


def open_wrap(wrap: bytes, box_secret: bytes, box_public: bytes, *, stream: bytes, epoch: int,
              mode: int) -> bytes:
    """The secret in ``wrap``, once it opens with the box key pair and names exactly
    ``stream``, ``epoch`` and ``mode``; raises :class:`WrapError` with the reason."""
    _check_fields(stream, epoch, mode)
    if not SEALED_BOX_OVERHEAD_BYTES < len(wrap) <= MAX_WRAPPED_KEY_BYTES:
        raise WrapError(f"a wrap of {len(wrap)} bytes; wraps are "
                        f"{SEALED_BOX_OVERHEAD_BYTES + 1}..{MAX_WRAPPED_KEY_BYTES} bytes")
    try:
        inner = nacl.bindings.crypto_box_seal_open(wrap, box_public, box_secret)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise WrapError("the wrap does not open with this box key") from None
    try:
        value = codec.decode(inner, max_bytes=MAX_WRAPPED_KEY_BYTES)
    except codec.DecodeError as exc:
        raise WrapError(f"wrap contents: {exc}") from None
    if (type(value) is not list or len(value) != 4 or type(value[3]) is not bytes
            or len(value[3]) != STATE_BYTES):
        raise WrapError("wrap contents are not [stream, epoch, mode, 32-byte secret]")
    got_stream, got_epoch, got_mode, secret = value
    if got_stream != stream:
        raise WrapError("the wrap is for another stream")
    if got_epoch != epoch or type(got_epoch) is not int:
        raise WrapError(f"the wrap is for epoch {got_epoch!r}, not {epoch}")
    if got_mode != mode or type(got_mode) is not int:
        raise WrapError(f"the wrap is of mode {got_mode!r}, not {MODE_NAMES[mode]}")
    return secret


def wrap_hash(wrap: bytes) -> bytes:
    """``H("iomt/wrap/v1\\0" | wrap)``: what a grant's signed body holds."""
    return payload.wrap_hash(wrap)


def wraps_sidecar(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """The sidecar beside an epoch announcement or a revocation: ``encode([[grantee, wrap],
    ...])``."""
    return codec.encode([[g, w] for g, w in pairs])


def wraps_hash(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """``H("iomt/wraps/v1\\0" | encode([[grantee, wrap], ...]))`` over ``(grantee, wrap)``
    pairs in strictly ascending grantee order, as the epoch's ``grantees`` list."""
    grantees = [grantee for grantee, _ in pairs]
    if any(a >= b for a, b in itertools.pairwise(grantees)):
        raise WrapError("wraps must be listed in strictly ascending grantee order")
    return payload.wraps_hash(wraps_sidecar(pairs))


def wrapped_secret(root: bytes, stream: bytes, epoch: int, mode: int) -> bytes:
    """What a wrap of ``mode`` holds for ``epoch``: ``x_e`` (forward) or ``t_e`` (history)."""
    _check_fields(stream, epoch, mode)
    state = epoch_state(root, stream, epoch)
    return state if mode == HISTORY else epoch_keypair(state)[0]


def grant_wrap(root: bytes, stream: bytes, epoch: int, mode: int, box_public: bytes) -> bytes:
    """The wrap beside a grant of ``mode`` made in ``epoch``."""
    return make_wrap(stream, epoch, mode, wrapped_secret(root, stream, epoch, mode),
                     box_public)


def epoch_wraps(root: bytes, stream: bytes, epoch: int,
                grantees: list[tuple[bytes, bytes, int]]) -> list[tuple[bytes, bytes]]:
    """``(grantee, wrap)`` for each live grantee ``(grantee key, box key, mode)``, in
    ascending grantee order: what the patient's client sends beside an epoch announcement or
    a revocation (whose ``grantees`` and ``wraps_hash`` they give)."""
    keys = [grantee for grantee, _, _ in grantees]
    if len(set(keys)) != len(keys):
        raise WrapError("a grantee is listed twice")
    return [(grantee, grant_wrap(root, stream, epoch, mode, box))
            for grantee, box, mode in sorted(grantees)]
