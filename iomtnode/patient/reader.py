"""Opening what a node served of a stream (``get_patient_records``), on the reader's machine
(docs/privacy.md, sections 3 and 6). Pure: the caller fetches, this decides.

A reading is opened only when everything holds: its device's signature verifies, the content
the node gave hashes to the commitment the signed body holds, and the reader's keyring has the
key of the reading's epoch, with which the content opens under the reading's associated data.
Otherwise it is :class:`Unreadable`, with the reason; nothing is guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from iomtnode.core.crypto import BadSignatureError
from iomtnode.core.payload import INLINE_CLASSES, PayloadError, check_sidecar
from iomtnode.core.tx import MalformedTxError, Reading, SignedTx, decode_tx

from .keyring import Keyring
from .keys import GranteeKeys
from .plaintext import DEVICE_CLASS_NAMES, Plaintext
from .seal import OpenError
from .wraps import WrapError


class RecordsError(ValueError):
    """An answer of the node that is not a page of readings of the stream asked for."""


@dataclass(frozen=True, slots=True)
class Served:
    """One reading as the node served it: the signed transaction (checked) and its place."""

    tx: SignedTx
    height: int
    sidecar: bytes  # b"": the node gave none
    erased_by: bytes  # the Erase's id, or b""
    blob: bool  # for classes 1 and 2: the node holds the blob

    @property
    def reading(self) -> Reading:
        assert isinstance(self.tx.body, Reading)
        return self.tx.body

    @property
    def inline(self) -> bool:
        return self.reading.size_class in INLINE_CLASSES


@dataclass(frozen=True, slots=True)
class Opened:
    served: Served
    plain: Plaintext


@dataclass(frozen=True, slots=True)
class Unreadable:
    served: Served
    reason: str


def _hex(entry: Mapping[str, Any], name: str) -> bytes:
    value = entry.get(name)
    if value is None:
        return b""
    try:
        return bytes.fromhex(value)
    except (TypeError, ValueError):
        raise RecordsError(f"{name} is not hex") from None


def served(entry: Mapping[str, Any], chain_id: str) -> Served:
    """A reading entry of ``get_patient_records``, its transaction decoded and its device's
    signature checked; raises :class:`RecordsError` for an entry that is not a genuine
    reading (a node cannot forge one: it does not hold a device's key)."""
    try:
        tx = decode_tx(_hex(entry, "tx"))
        tx.verify(chain_id)
    except MalformedTxError as exc:
        raise RecordsError(f"an entry is not a transaction: {exc}") from None
    except BadSignatureError:
        raise RecordsError("an entry's device signature does not verify") from None
    if not isinstance(tx.body, Reading):
        raise RecordsError(f"an entry is a {tx.kind_name}, not a reading")
    height = entry.get("height")
    if type(height) is not int or height < 0:
        raise RecordsError("an entry's height is not a non-negative integer")
    return Served(tx, height, _hex(entry, "sidecar"), _hex(entry, "erased_by"),
                  entry.get("blob") is True)


def keyring_for(root: bytes | None, grantee: GranteeKeys | None, stream: bytes,
                wraps: Iterable[Mapping[str, Any]]) -> tuple[Keyring, list[str]]:
    """The reader's keyring: a patient's derives every epoch; a grantee's holds what the wraps
    it was served give. Returns it with the wraps that did not open (each with the reason)."""
    if root is not None:
        return Keyring.for_patient(root), []
    assert grantee is not None
    ring = Keyring.for_grantee(grantee)
    problems: list[str] = []
    seen: set[tuple[int, int, bytes]] = set()
    for w in wraps:
        try:
            key = (w["epoch"], w["mode"], bytes.fromhex(w["wrap"]))
        except (KeyError, TypeError, ValueError):
            problems.append("a wrap entry is malformed")
            continue
        if key in seen:
            continue
        seen.add(key)
        try:
            ring.add_wrap(stream, *key)
        except WrapError as exc:
            problems.append(f"the wrap of epoch {key[0]} from {w.get('tx_id', '?')!s:.16}: {exc}")
    return ring, problems


def open_served(s: Served, ring: Keyring, chain_id: str, stream: bytes,
                blob: bytes | None = None) -> Opened | Unreadable:
    """Open ``s`` with ``ring`` (``blob``: the content of a class 1 or 2 reading, fetched)."""
    r = s.reading
    if s.erased_by:
        return Unreadable(s, f"erased by {s.erased_by.hex()}")
    content = s.sidecar if s.inline else (blob or b"")
    if not content:
        return Unreadable(s, "the node holds no content for it" if s.inline or not s.blob
                          else "its blob could not be fetched")
    try:
        check_sidecar(r.size_class, r.commitment, content)
    except PayloadError as exc:
        return Unreadable(s, f"the content the node gave is not the reading's: {exc}")
    if ring.secret_for(stream, r.epoch) is None:
        return Unreadable(s, f"no key for epoch {r.epoch}: no grant or wrap of this reader "
                          "covers it")
    try:
        plain = ring.open_reading(chain_id, stream, r.device, r.seq, r.epoch, content)
    except OpenError as exc:
        return Unreadable(s, f"does not open: {exc}")
    return Opened(s, plain)


def to_json(result: Opened | Unreadable) -> dict[str, Any]:
    """One line of ``records fetch``'s output."""
    s = result.served
    r = s.reading
    out: dict[str, Any] = {"id": s.tx.id.hex(), "device": r.device.hex(), "seq": r.seq,
                           "ts_ms": r.ts_ms, "epoch": r.epoch, "height": s.height,
                           "size_class": r.size_class}
    if isinstance(result, Unreadable):
        return out | {"unreadable": result.reason}
    p = result.plain
    out |= {"kind": p.kind_name, "measured_ms": p.measured_ms, "values": list(p.values),
            "device_class": DEVICE_CLASS_NAMES[p.device_class]}
    if p.samples:
        out["samples"] = p.samples.hex()
    return out
