"""The localnet's one error class, shared by every module of the package."""

from __future__ import annotations


class LocalnetError(RuntimeError):
    """A localnet directory or operation that cannot proceed (says what to do)."""


class LocalnetTimeout(LocalnetError):
    """A localnet wait that ran out of time (names the node and the condition)."""
