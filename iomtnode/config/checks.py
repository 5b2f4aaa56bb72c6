"""The rules every setting obeys, as data: each :class:`Rule` names its key, says what the
key may hold (in the error and in docs/configuration.md) and checks it. :func:`check` runs
them all and returns every broken one, so a file with three mistakes gets three messages."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import Issue
from .hostport import DIALABLE, HOSTPORT, dial_problem, problem, split

LOG_LEVELS = ("debug", "info", "warning", "error")
DAY_S = 86_400
Values = Mapping[str, Any]  # every setting by name, each of its declared type


@dataclass(frozen=True, slots=True)
class Rule:
    key: str
    allowed: str  # what the key may hold: "between 1 and 1,000", "HOST:PORT or empty"
    ok: Callable[[Values], bool]
    reads: tuple[str, ...] = ()  # the other keys it compares with: not run when one is wrong
    why: Callable[[Values], str | None] | None = None  # what is wrong, said after the value
    # what holds whatever the keys it reads are (their widest range): checked instead when
    # one of them is wrong, so a value wrong for any of them is reported at once
    bound: Callable[[Values], bool] | None = None

    def issue(self, values: Values, *, reads_wrong: bool = False) -> Issue | None:
        if (self.bound if reads_wrong and self.bound is not None else self.ok)(values):
            return None
        why = self.why(values) if self.why is not None else None
        return Issue(self.key, f"{self.key} must be {self.allowed}, got {values[self.key]!r}"
                               + (f": {why}" if why else ""))


def _number(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


def between(key: str, low: float, high: float, unit: str = "", note: str = "") -> Rule:
    """``low <= value <= high`` (a NaN is never between)."""
    allowed = f"between {_number(low)} and {_number(high)}{unit}{note}"
    return Rule(key, allowed, lambda v: low <= v[key] <= high)


def _address(key: str, *, optional: bool = False, dialable: bool = False) -> Rule:
    """A HOST:PORT setting (``iomtnode/hostport.py``): one a listener binds, or with
    ``dialable`` one other nodes dial; ``optional``: or empty."""
    fault = dial_problem if dialable else problem
    allowed = (DIALABLE if dialable else HOSTPORT) + (", or empty" if optional else "")
    return Rule(key, allowed, lambda v: (optional and not v[key]) or fault(v[key]) is None,
                why=lambda v: fault(v[key]))


def _addresses(key: str) -> Rule:
    """A list of addresses other nodes dial; the error names the first one that is wrong."""
    def why(v: Values) -> str | None:
        return next((f"{address!r}: {fault}" for address in v[key]
                     if (fault := dial_problem(address)) is not None), None)

    return Rule(key, f"a list of {DIALABLE}", lambda v: why(v) is None, why=why)


def _one_socket(a: str, b: str) -> bool:
    """Whether listeners on ``a`` and ``b`` (HOST:PORT) would bind one socket address: the
    same port, not 0, and the same host, or a wildcard and an address of its family."""
    (fault_a, host_a, port_a), (fault_b, host_b, port_b) = split(a), split(b)
    if fault_a or fault_b or port_a != port_b or port_a == 0:
        return False
    if host_a == host_b:
        return True
    try:
        ip_a, ip_b = ipaddress.ip_address(host_a), ipaddress.ip_address(host_b)
    except ValueError:  # a name: only the same name is known to be the same host
        return False
    return ip_a.version == ip_b.version and (ip_a.is_unspecified or ip_b.is_unspecified)


def _apart(key: str, *others: str) -> Rule:
    """``key``, a listener, binds no address another listener of the node binds."""
    def why(v: Values) -> str | None:
        return next((f"{other} listens there ({v[other]!r})" for other in others
                     if v[key] and _one_socket(v[key], v[other])), None)

    return Rule(key, f"an address and port of its own (not those of {' or '.join(others)})",
                lambda v: why(v) is None, others, why=why, bound=lambda v: True)


def _tls_pair(key: str, other: str) -> Rule:
    return Rule(key, f"set when {other} is (api_tls_cert and api_tls_key are given "
                     "together or not at all)", lambda v: bool(v[key]) or not v[other])


_TIMEOUTS = ("timeout_propose_s", "timeout_prevote_s", "timeout_precommit_s")

RULES: tuple[Rule, ...] = (
    _address("api_listen"),
    between("api_max_connections", 1, 100_000),
    Rule("api_max_connections_per_ip", "between 1 and api_max_connections",
         lambda v: 1 <= v["api_max_connections_per_ip"] <= v["api_max_connections"],
         ("api_max_connections",),
         bound=lambda v: 1 <= v["api_max_connections_per_ip"] <= 100_000),
    between("api_idle_timeout_s", 1, DAY_S, " seconds"),
    between("api_requests_per_s", 1, 1_000_000),
    _address("p2p_listen"),
    _address("advertise_address", optional=True, dialable=True),
    _address("metrics_listen", optional=True),
    _apart("p2p_listen", "api_listen"),
    _apart("metrics_listen", "api_listen", "p2p_listen"),
    between("block_interval_s", 0.001, 60, " seconds"),
    Rule("empty_block_interval_s", "between block_interval_s and 3,600 seconds",
         lambda v: v["block_interval_s"] <= v["empty_block_interval_s"] <= 3600,
         ("block_interval_s",), bound=lambda v: 0.001 <= v["empty_block_interval_s"] <= 3600),
    between("mempool_max_txs", 1, 10_000_000),
    between("max_block_txs", 1, 10_000),
    Rule("log_level", f"one of {', '.join(LOG_LEVELS)}", lambda v: v["log_level"] in LOG_LEVELS),
    _addresses("bootnodes"),
    between("max_peers", 1, 1000),
    Rule("outbound_slots", "between 0 and max_peers - 1",
         lambda v: 0 <= v["outbound_slots"] < v["max_peers"], ("max_peers",),
         bound=lambda v: 0 <= v["outbound_slots"] < 1000),
    between("max_inbound_per_ip", 1, 1000),
    between("max_inbound_per_netgroup", 1, 1000),
    between("max_pending_per_ip", 1, 1000),
    between("max_pending_per_netgroup", 1, 1000),
    between("ban_s", 0, 30 * DAY_S, " seconds", " (30 days)"),
    between("address_ban_s", 0, 30 * DAY_S, " seconds", " (30 days)"),
    *(between(key, 0.01, 60, " seconds") for key in _TIMEOUTS),
    between("timeout_delta_s", 0, 60, " seconds"),
    Rule("timeout_cap_s", "between the longest of timeout_propose_s, timeout_prevote_s and "
                          "timeout_precommit_s, and 600 seconds",
         lambda v: max(v[key] for key in _TIMEOUTS) <= v["timeout_cap_s"] <= 600, _TIMEOUTS,
         bound=lambda v: 0.01 <= v["timeout_cap_s"] <= 600),
    between("resend_interval_s", 0.05, 60, " seconds"),
    between("fresh_grace_s", 0, 600, " seconds", " (0: automatic)"),
    _tls_pair("api_tls_cert", "api_tls_key"),
    _tls_pair("api_tls_key", "api_tls_cert"),
    between("audit_anchor_s", 0.1, 3600, " seconds"),
)


def check(values: Values, skip: Iterable[str] = ()) -> list[Issue]:
    """Every rule ``values`` break, in the order of :data:`RULES`; rules of the keys in
    ``skip`` (already known to be wrong) are not run, and a rule comparing its key with a
    wrong one checks only its ``bound`` (``block_interval_s = nan`` is one error, not also
    one of ``empty_block_interval_s = 5``, which is compared with it; but
    ``outbound_slots = -1`` is wrong whatever ``max_peers`` is, and is reported beside it)."""
    wrong = set(skip)
    issues = []
    for rule in RULES:
        reads_wrong = bool(wrong.intersection(rule.reads))
        if rule.key in wrong or (reads_wrong and rule.bound is None):
            continue
        if (issue := rule.issue(values, reads_wrong=reads_wrong)) is not None:
            issues.append(issue)
            wrong.add(rule.key)
    return issues
