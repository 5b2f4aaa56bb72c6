"""``HOST:PORT`` addresses, strictly: one reading of each, or an error saying what is wrong.

HOST is an IPv4 address (``10.0.0.2``), a DNS name (``node1.example``; ASCII labels of 1 to
63 letters, digits, ``-`` and ``_``, no ``-`` at either end, 253 characters in all, one
trailing ``.`` allowed, never ending in an all-digit label, which only an IPv4 address does),
or an IPv6 address in brackets (``[::1]``: without them ``::1:7546`` could be the host
``::1:7546`` with no port, or ``::1`` on 7546). PORT is 0 to 65535 in ASCII digits (at most 5;
no sign). Nothing else: no spaces, no characters outside ASCII (an international name is
written in its ``xn--`` form), no empty host.

The names allow ``_`` beside RFC 1123's letters, digits and ``-``: container platforms name
services with it (``node_1``) and their resolvers answer for them, and the genesis ceremony
takes such names on its cards.

One grammar for every reader of an address (the settings, the genesis ceremony's cards, peer
records): a leaf module, below both ``config`` and ``core``. :func:`iomtnode.config.
parse_hostport` is the settings' reading, raising their ``ConfigError``.
"""

from __future__ import annotations

import ipaddress
import re

HOSTPORT = ("HOST:PORT (HOST an IPv4 address, a DNS name, or an IPv6 address in brackets as "
            "in [::1]:7546; PORT 0 to 65535)")
DIALABLE = ("HOST:PORT that other nodes can dial (HOST an IPv4 address, a DNS name, or an "
            "IPv6 address in brackets as in [::1]:7546, not 0.0.0.0 or [::]; PORT 1 to 65535)")
MAX_PORT = 65535
MAX_NAME_CHARS = 253  # a DNS name, without its trailing dot (RFC 1035 2.3.4)
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")  # 1 to 63 characters
_PORT = re.compile(r"[0-9]+")
MAX_PORT_DIGITS = 5


def problem(value: str) -> str | None:
    """What makes ``value`` not ``HOST:PORT`` (module doc), or None if it is one."""
    return _split(value)[0]


def split(value: str) -> tuple[str | None, str, int]:
    """``(None, host, port)`` of ``value`` (an IPv6 host without its brackets), or ``(what is
    wrong, "", 0)``."""
    return _split(value)


def is_hostport(value: str) -> bool:
    return problem(value) is None


def dial_problem(value: str) -> str | None:
    """What makes ``value`` an address another node cannot dial, or None: it must be
    HOST:PORT with a port from 1 and a host that is not a wildcard (``0.0.0.0``, ``[::]``: a
    listener's "every interface", which names no host)."""
    fault, host, port = _split(value)
    if fault is not None:
        return fault
    if port == 0:
        return "port 0 cannot be dialed"
    if _is_wildcard(host):
        return f"{host} is a listener's every interface, which names no host to dial"
    return None


def is_dialable(value: str) -> bool:
    """HOST:PORT that another node can dial (see :func:`dial_problem`)."""
    return dial_problem(value) is None


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _split(value: str) -> tuple[str | None, str, int]:
    """``(None, host, port)``, or ``(what is wrong, "", 0)``."""
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        return "only printable ASCII, without spaces (a name in its xn-- form)", "", 0
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return "an opening [ without its closing ]", "", 0
        host, rest = value[1:end], value[end + 1:]
        if not rest.startswith(":"):
            return "the ] of an IPv6 address must be followed by :PORT", "", 0
        port = rest[1:]
        fault = _ipv6_problem(host)
    else:
        host, sep, port = value.rpartition(":")
        if not sep:
            return "no :PORT", "", 0
        fault = _host_problem(host)
    if fault is None and not _PORT.fullmatch(port):
        fault = f"the port must be ASCII digits, got {port!r}" if port else "no port"
    if fault is None and (len(port) > MAX_PORT_DIGITS or int(port) > MAX_PORT):
        fault = f"port {port} is not 0 to {MAX_PORT} (at most {MAX_PORT_DIGITS} digits)"
    return (fault, "", 0) if fault is not None else (None, host, int(port))


def _ipv6_problem(host: str) -> str | None:
    if not host:
        return "empty brackets name no host"
    return None if _is_ipv6(host) else f"{host!r} in brackets is not an IPv6 address"


def _host_problem(host: str) -> str | None:
    if not host:
        return "no host before the :PORT"
    if "[" in host or "]" in host:
        return "a bracket out of place (an IPv6 address is written [ADDRESS]:PORT)"
    if ":" in host:
        return ("an IPv6 address must be in brackets, as in [::1]:7546" if _is_ipv6(host)
                else f"the host {host!r} holds a ':' (an IPv6 address goes in brackets)")
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if len(name) > MAX_NAME_CHARS or not all(_LABEL.fullmatch(label) for label in labels):
        return (f"{host!r} is neither an IPv4 address nor a DNS name (labels of 1 to 63 "
                f"letters, digits, '-' and '_', no '-' at either end, {MAX_NAME_CHARS} "
                "characters in all)")
    if labels[-1].isdigit():  # no top-level domain is a number: this is meant as an IPv4
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host!r} is not an IPv4 address (four numbers 0 to 255, no leading 0)"
    return None


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True
