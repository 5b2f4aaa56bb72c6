"""The genesis: what every node of one network agrees on before the first block.

Stored as readable JSON (``genesis.json`` in a node's home); its hash, over the
canonical encoding of its fields, identifies the chain and is the parent of block 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import codec
from .block import NO_PROPOSER, Block, make_block
from .crypto import KEY_BYTES, MAX_CHAIN_ID_BYTES, blake2b256
from .fields import IDENT_RE, U64_MAX
from .window import DEFAULT_REPLAY_WINDOW, MAX_REPLAY_WINDOW

SHOWN_CHAIN_ID_CHARS = 40  # a refused chain id is quoted up to this many characters

GENESIS_VERSION = 1
DEFAULT_MAX_FUTURE_DRIFT_MS = 30_000  # a reading may be stamped this far past block time
MAX_AUTHORITIES = 128


class GenesisError(ValueError):
    """A genesis file that is missing, unreadable or inconsistent (says which field)."""


@dataclass(frozen=True, slots=True)
class Genesis:
    chain_id: str
    time_ms: int
    authorities: tuple[bytes, ...]
    admission_threshold: int  # authority approvals needed to admit a device
    max_future_drift_ms: int = DEFAULT_MAX_FUTURE_DRIFT_MS
    # a device's reading may lag its highest sequence number by less than this (see
    # core/window.py); 1 means strictly increasing
    replay_window: int = DEFAULT_REPLAY_WINDOW

    def __post_init__(self) -> None:
        if not IDENT_RE.fullmatch(self.chain_id.replace("-", "_")) or len(
            self.chain_id.encode()
        ) > MAX_CHAIN_ID_BYTES:
            shown = (repr(self.chain_id) if len(self.chain_id) <= SHOWN_CHAIN_ID_CHARS else
                     f"{self.chain_id[:SHOWN_CHAIN_ID_CHARS]!r}... ({len(self.chain_id)} "
                     "characters)")
            raise GenesisError(
                "chain_id must be 1 to 32 characters: a lowercase letter, then lowercase "
                f"letters, digits, '-' or '_'; got {shown}")
        if not 1 <= len(self.authorities) <= MAX_AUTHORITIES:
            raise GenesisError(f"need 1 to {MAX_AUTHORITIES} authorities")
        if any(type(a) is not bytes or len(a) != KEY_BYTES for a in self.authorities):
            raise GenesisError("each authority must be a 32-byte ed25519 public key")
        if len(set(self.authorities)) != len(self.authorities):
            raise GenesisError("authorities must be distinct")
        if not 1 <= self.admission_threshold <= len(self.authorities):
            raise GenesisError(
                f"admission_threshold must be between 1 and {len(self.authorities)}"
            )
        if not (0 <= self.time_ms <= U64_MAX and 0 <= self.max_future_drift_ms <= U64_MAX):
            raise GenesisError("time_ms and max_future_drift_ms must be in [0, 2^64)")
        if type(self.replay_window) is not int or not (
                1 <= self.replay_window <= MAX_REPLAY_WINDOW):
            raise GenesisError(
                f"replay_window must be an integer from 1 (sequence numbers strictly "
                f"increasing) to {MAX_REPLAY_WINDOW}, not {self.replay_window!r}")

    @property
    def hash(self) -> bytes:
        """The chain's identity. A genesis with the default ``replay_window`` hashes as
        one made before the field existed, so existing homes and data directories keep
        their chain; any other window is part of the hash."""
        fields: list[Any] = [
            GENESIS_VERSION, self.chain_id, self.time_ms, list(self.authorities),
            self.admission_threshold, self.max_future_drift_ms,
        ]
        if self.replay_window != DEFAULT_REPLAY_WINDOW:
            fields.append(self.replay_window)
        return blake2b256(codec.encode(fields))

    def block(self) -> Block:
        """Block 0: no transactions, no proposer, parent = the genesis hash."""
        return make_block(
            height=0, time_ms=self.time_ms, parent=self.hash, proposer=NO_PROPOSER, txs=(),
            authorities=self.authorities, last_commit=None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "version": GENESIS_VERSION,
            "chain_id": self.chain_id,
            "time_ms": self.time_ms,
            "authorities": [a.hex() for a in self.authorities],
            "admission_threshold": self.admission_threshold,
            "max_future_drift_ms": self.max_future_drift_ms,
            "replay_window": self.replay_window,
        }

    @classmethod
    def from_json(cls, doc: Any) -> Genesis:
        if not isinstance(doc, dict):
            raise GenesisError("genesis must be a JSON object")
        version = doc.get("version")
        if type(version) is not int or version != GENESIS_VERSION:
            raise GenesisError(f"genesis version must be {GENESIS_VERSION}")
        try:
            authorities = doc["authorities"]
            if not isinstance(authorities, list) or not all(
                    isinstance(a, str) for a in authorities):
                raise GenesisError("authorities must be a list of hex keys")
            return cls(
                chain_id=_typed(doc, "chain_id", str),
                time_ms=_typed(doc, "time_ms", int),
                authorities=tuple(bytes.fromhex(a) for a in authorities),
                admission_threshold=_typed(doc, "admission_threshold", int),
                max_future_drift_ms=_typed(doc, "max_future_drift_ms", int,
                                           DEFAULT_MAX_FUTURE_DRIFT_MS),
                replay_window=_typed(doc, "replay_window", int, DEFAULT_REPLAY_WINDOW),
            )
        except KeyError as exc:
            raise GenesisError(f"genesis lacks the field {exc.args[0]}") from None
        except (TypeError, ValueError, OverflowError) as exc:  # int(Infinity) overflows
            if isinstance(exc, GenesisError):
                raise
            raise GenesisError(f"genesis has a malformed field: {exc}") from None

    def to_text(self) -> str:
        """genesis.json's text: the JSON view, indented (the home writes it, see
        :meth:`iomtnode.home.Home.save_genesis`)."""
        return json.dumps(self.to_json(), indent=2) + "\n"

    @classmethod
    def load(cls, path: Path) -> Genesis:
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise GenesisError(f"no genesis file at {path}") from None
        except (OSError, ValueError, RecursionError) as exc:  # deep nesting recurses
            raise GenesisError(f"cannot read genesis {path}: {exc}") from None
        try:
            return cls.from_json(doc)
        except GenesisError as exc:  # name the file: it may be another JSON file given
            raise GenesisError(f"{path} is not a valid genesis: {exc}") from None


_MISSING = object()


def _typed(doc: dict[str, Any], name: str, kind: type, default: Any = _MISSING) -> Any:
    """``doc[name]``, which must be of JSON type ``kind`` exactly: what the file says is
    what is hashed, so a number written as a string or a float, or a boolean for a number,
    is refused rather than converted."""
    value = doc[name] if default is _MISSING else doc.get(name, default)
    if type(value) is not kind:
        raise GenesisError(f"{name} must be {'a string' if kind is str else 'an integer'}, "
                           f"not {value!r}")
    return value

