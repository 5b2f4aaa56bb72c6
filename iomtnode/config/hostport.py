"""The settings' reading of ``HOST:PORT`` (the grammar is :mod:`iomtnode.hostport`)."""

from __future__ import annotations

from ..hostport import DIALABLE, HOSTPORT, dial_problem, is_dialable, is_hostport, problem, split
from .errors import ConfigError

__all__ = ["DIALABLE", "HOSTPORT", "dial_problem", "is_dialable", "is_hostport",
           "parse_hostport", "problem"]


def parse_hostport(value: str, name: str = "address") -> tuple[str, int]:
    """``(host, port)`` of ``value``, HOST:PORT (:mod:`iomtnode.hostport`); an IPv6 host is
    returned without its brackets. Raises :class:`ConfigError` naming ``name``, the form
    expected and what is wrong with ``value``."""
    fault, host, port = split(value)
    if fault is not None:
        raise ConfigError(f"{name} must be {HOSTPORT}, got {value!r}: {fault}")
    return host, port
