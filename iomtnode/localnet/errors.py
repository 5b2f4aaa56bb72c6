"""The localnet's error classes, shared by every module of the package."""

from __future__ import annotations


class LocalnetError(RuntimeError):
    """A localnet directory or operation that cannot proceed (says what to do)."""


class LocalnetDirError(LocalnetError):
    """A --dir the command cannot use: no localnet there, an unreadable manifest, or not
    empty where a new localnet would go. The operator's input: every command exits 2."""


class LocalnetTimeout(LocalnetError):
    """A localnet wait that ran out of time (names the node and the condition)."""
