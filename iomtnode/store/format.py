"""The format of a node's LevelDB store: how its keyspace is laid out (the prefixes and key
and value layouts of :mod:`.leveldb`, :mod:`.txlog` and :mod:`.sidecars`), numbered, and the
steps that bring a store of an older format up to date when it is opened.

This is not the ledger rules version (:mod:`iomtnode.chain.rules`): that one says which rules
built the state, which every node of a network must share and which a store cannot be
migrated across; the store format says only how this node lays its bytes out, and a newer
release reads an older format by migrating it in place.

A store records its format in the meta entry ``store_format`` (2 bytes, big-endian). A store
without it was laid out by a release from before formats were numbered, whose layout is
format 1: opening it writes the record. A store of a newer format than
:data:`STORE_FORMAT` is refused, untouched: this release would misread it.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import plyvel
import structlog

from .. import __version__
from .errors import StoreFormatError

log = structlog.get_logger(__name__)

STORE_FORMAT = 1  # the format this release writes and reads
UNVERSIONED = 1  # the format of a store that records none (an older release's)
FORMAT_KEY = b"M" + b"store_format"  # the meta entry (leveldb.META_PREFIX + name)
FORMAT_BYTES = 2

Step = Callable[[plyvel.DB, Any], None]
# step N reads a store of format N and puts what makes it format N + 1 into the write batch
# it is given (never into the store itself): the batch, with the record of format N + 1,
# is written at once and synced, so a crash leaves format N untouched (the step runs again
# at the next open, on format N) or format N + 1 whole. None yet: format 1 is the first.
# Each step comes with a test that opens a store of format N, and a line in
# docs/upgrading.md.
STORE_MIGRATIONS: Mapping[int, Step] = {}


def stored_format(db: plyvel.DB) -> int | None:
    """The format ``db`` records, or None if it records none."""
    raw = db.get(FORMAT_KEY)
    return None if raw is None else int.from_bytes(raw, "big")


def bring_format_up_to_date(db: plyvel.DB, path: pathlib.Path, current: int = STORE_FORMAT,
                            steps: Mapping[int, Step] = STORE_MIGRATIONS) -> None:
    """Migrate the store ``db`` (at ``path``) to format ``current``, one step at a time,
    each step's changes with the format it reaches in one synced write; raise
    :class:`StoreFormatError` if it is newer."""
    raw = db.get(FORMAT_KEY)
    if raw is not None and (len(raw) != FORMAT_BYTES or stored_format(db) < UNVERSIONED):
        raise StoreFormatError(
            f"the store at {path} records store format {raw.hex()} (hex), which no release "
            f"writes: the store is damaged. Move {path} aside and let this node resync from "
            f"its peers, or restore it from a backup")
    found = stored_format(db)
    version = UNVERSIONED if found is None else found
    if version > current:
        raise StoreFormatError(
            f"the store at {path} is of store format {version}, but this iomtnode "
            f"({__version__}) reads store formats up to {current}: a newer release wrote it. "
            f"Upgrade iomtnode (docs/upgrading.md), or move {path} aside and let this node "
            f"resync from its peers")
    if found is None:  # an older release's store (or a new, empty one): say what it is
        _record(db, version)
    for step in range(version, current):
        # transaction: an exception in the step (or the process dying) writes nothing
        with db.write_batch(transaction=True, sync=True) as batch:
            steps[step](db, batch)
            batch.put(FORMAT_KEY, (step + 1).to_bytes(FORMAT_BYTES, "big"))
        log.info("store_format_upgraded", store=str(path), from_format=step,
                 to_format=step + 1)


def _record(db: plyvel.DB, version: int) -> None:
    db.put(FORMAT_KEY, version.to_bytes(FORMAT_BYTES, "big"), sync=True)
