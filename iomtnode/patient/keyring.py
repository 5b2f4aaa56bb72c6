"""The keys a reader holds for opening readings (docs/privacy.md, sections 1 and 3).

A patient's keyring derives every epoch of every stream from the root. A grantee's keyring
holds what its wraps gave it: a forward wrap of epoch ``e`` gives ``x_e`` alone; a history
wrap of epoch ``e`` gives ``t_e``, hence every epoch up to ``e``; nothing gives a later
epoch (key regression has no way up).
"""

from __future__ import annotations

from collections.abc import Iterable

from .keys import (
    EPOCHS_PER_STREAM,
    GranteeKeys,
    Regression,
    epoch_keypair,
    epoch_state,
)
from .plaintext import Plaintext
from .seal import OpenError, open_reading
from .wraps import FORWARD, HISTORY, WrapError, open_wrap

MAX_CACHED_SECRETS = 65_536  # x_e values kept (32 B each): one stream's every epoch


class Keyring:
    """Epoch secrets ``x_e`` by ``(stream, epoch)``. Build with :meth:`for_patient` or
    :meth:`for_grantee`; a grantee's keyring learns epochs from :meth:`add_wrap`."""

    __slots__ = ("_cache", "_chains", "_forward", "_grantee", "_history", "_root")

    def __init__(self, *, root: bytes | None = None, grantee: GranteeKeys | None = None) -> None:
        if (root is None) == (grantee is None):
            raise ValueError("a keyring is a patient's (root) or a grantee's (keys), not both")
        self._root = root
        self._grantee = grantee
        self._forward: dict[tuple[bytes, int], bytes] = {}  # (stream, epoch) -> x_e
        # stream -> the highest history state and its epoch; its chain is walked once, when a
        # key is first asked (a node can seal any number of wraps to the grantee's box key)
        self._history: dict[bytes, tuple[bytes, int]] = {}
        self._chains: dict[bytes, Regression] = {}
        self._cache: dict[tuple[bytes, int], bytes] = {}

    @classmethod
    def for_patient(cls, root: bytes) -> Keyring:
        """The patient's: every epoch of every stream of theirs."""
        return cls(root=root)

    @classmethod
    def for_grantee(cls, keys: GranteeKeys,
                    wraps: Iterable[tuple[bytes, int, int, bytes]] = ()) -> Keyring:
        """A grantee's, holding what ``wraps`` give: each ``(stream, epoch, mode, wrap)`` as
        its grant or epoch announcement names it (see :meth:`add_wrap`)."""
        ring = cls(grantee=keys)
        for stream, epoch, mode, wrap in wraps:
            ring.add_wrap(stream, epoch, mode, wrap)
        return ring

    def add_wrap(self, stream: bytes, epoch: int, mode: int, wrap: bytes) -> None:
        """Open ``wrap`` (from a grant or an epoch announcement naming ``stream``, ``epoch``
        and ``mode``) and keep what it gives; raises :class:`WrapError` if it does not open
        or names other fields."""
        if self._grantee is None:
            raise WrapError("a patient's keyring derives every epoch; it takes no wraps")
        secret = open_wrap(wrap, self._grantee.box_secret, self._grantee.box_public,
                           stream=stream, epoch=epoch, mode=mode)
        if mode == FORWARD:
            self._forward[(stream, epoch)] = secret
            return
        assert mode == HISTORY
        known = self._history.get(stream)
        if known is None or known[1] < epoch:
            self._history[stream] = (secret, epoch)
            self._chains.pop(stream, None)

    def secret_for(self, stream: bytes, epoch: int) -> bytes | None:
        """``x_epoch`` of ``stream``, or None when this keyring was given no key for it."""
        if type(epoch) is not int or not 1 <= epoch <= EPOCHS_PER_STREAM:
            return None
        cached = self._cache.get((stream, epoch))
        if cached is not None:
            return cached
        secret = self._derive(stream, epoch)
        if secret is not None:
            if len(self._cache) >= MAX_CACHED_SECRETS:
                self._cache.clear()
            self._cache[(stream, epoch)] = secret
        return secret

    def _derive(self, stream: bytes, epoch: int) -> bytes | None:
        if self._root is not None:
            return epoch_keypair(epoch_state(self._root, stream, epoch))[0]
        forward = self._forward.get((stream, epoch))
        if forward is not None:
            return forward
        history = self._history.get(stream)
        if history is None or epoch > history[1]:
            return None
        chain = self._chains.get(stream)
        if chain is None:
            chain = self._chains[stream] = Regression(*history)
        return epoch_keypair(chain.state(epoch))[0]

    def open_reading(self, chain_id: str, stream: bytes, device: bytes, seq: int, epoch: int,
                     sidecar: bytes) -> Plaintext:
        """The plaintext of a reading of ``stream``; raises :class:`OpenError` when this
        keyring holds no key for its epoch or the sidecar does not open."""
        secret = self.secret_for(stream, epoch)
        if secret is None:
            raise OpenError(f"no key for epoch {epoch} of stream {stream.hex()[:16]}")
        return open_reading(chain_id, stream, device, seq, epoch, secret, sidecar)

    def __repr__(self) -> str:  # never print a key by accident
        who = "patient" if self._root is not None else "grantee"
        return f"Keyring({who}, forward={len(self._forward)}, history={len(self._history)})"
