"""The format of config.toml: which one this release writes, and how a file of an older
format is read.

A file states its format in its ``version`` key. Files written before formats were numbered
have none: they are format 1. A file of a newer format than :data:`CONFIG_VERSION` is refused
(its keys may mean something this release does not know); one of an older format is read
through the steps of :data:`CONFIG_MIGRATIONS`, in memory: the file itself is left as the
operator wrote it, comments and all (``iomtnode config show`` says which format it has).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

CONFIG_VERSION = 1  # the format of the config.toml files this release writes and reads
UNVERSIONED = 1  # the format of a file without a ``version`` key (an older release's)

Migration = Callable[[dict[str, Any]], dict[str, Any]]
# step N turns the keys of a format-N file into those of format N + 1. None yet: format 1 is
# the first. A step that renames or drops a key goes here, with a test that reads a file of
# format N, and docs/upgrading.md says what it does.
CONFIG_MIGRATIONS: Mapping[int, Migration] = {}


def upgrade(values: dict[str, Any], found: int, current: int = CONFIG_VERSION,
            steps: Mapping[int, Migration] = CONFIG_MIGRATIONS) -> dict[str, Any]:
    """The keys of a format-``found`` file (``found <= current``) as format ``current``."""
    for version in range(found, current):
        values = steps[version](values)
    return values
