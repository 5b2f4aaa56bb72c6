"""Refused client requests: each one counted, and logged once on the node with its reason, in
a bounded number of lines per client address.

Every request the API refuses (answered with a JSON-RPC error, or a binary frame refused
whole) is told to :meth:`RefusalLog.refused` by the dispatcher or the binary handler, with the
client's address key (what per-address limits count by: an IPv4 address or an IPv6 /64, see
:func:`~iomtnode.api.connection.address_key`). It is counted by code (:meth:`counts`, the
``iomtnode_api_requests_refused_total`` metric) and logged as ``api_request_refused`` with
``method`` (``None`` when none could be read; the first :data:`MAX_METHOD_CHARS` of one the
client made up), ``code``, ``reason`` and ``address``; an admin method refused for its token is
``api_admin_refused`` (``reason``: the token was missing, not a string, or wrong). Never logged:
params, payloads, tokens, or the keys a chain rule's message names (for a chain rule's code the
reason is the rule's name as ``iomtnode_transactions_rejected_total`` counts it, e.g.
``stale_sequence``; the client gets the whole message). A batch that was answered but some of
whose transactions were refused (``submit_readings``, a binary frame) is no refused request: it
is logged once as ``api_transactions_refused`` (``refused`` of ``of``, the first refusal's code
and reason), within the same bound, and not counted here.

Levels (see :func:`level_of`): ``warning`` for a caller refused access (admin token, a proven
key the method needs, a patient's consent, a failed authentication); ``debug`` for answers a
correct client gets routinely (not found, a dropped transaction); ``info`` for the rest, which
point at a broken or hostile client (malformed JSON, an unknown method, bad params, a request
over a limit) or a transaction a chain rule refused.

Resource handling: a hostile client can send thousands of bad requests a second, so at most
:data:`REFUSAL_LINES_PER_WINDOW` lines are logged per address in each
:data:`REFUSAL_WINDOW_S` window (windows are aligned to trio's clock, one for all addresses).
Past that, refusals are only counted; when the window ends one ``api_refusals_suppressed`` line
per address tells how many, by code, at the level of the most severe of them. At most
:data:`MAX_REFUSAL_ADDRESSES` addresses are followed in a window; refusals from more share the
window of :data:`OTHER_ADDRESSES`. A refusal past the bound costs two dict updates; the lines
cost the node at most a few per address per second, whatever the client sends.
:meth:`RefusalLog.run` ends each window on time; without it a window ends at the next refusal.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field

import structlog
import trio

from ..admission.service import reason_name
from ..core.errors import RuleError
from .access import NO_CONSENT
from .auth import BAD_AUTH_SIGNATURE, FORBIDDEN, TOO_MANY_FAILURES
from .jsonrpc import UNAUTHORIZED, RpcError
from .methods import NOT_FOUND, TX_DROPPED

log = structlog.get_logger(__name__)

REFUSAL_WINDOW_S = 1.0  # the window the lines of one address are counted in
REFUSAL_LINES_PER_WINDOW = 5  # refusals logged per address in a window; the rest are counted
MAX_REFUSAL_ADDRESSES = 1024  # addresses followed in a window (a few hundred bytes each)
OTHER_ADDRESSES = "*"  # the window shared by refusals from addresses past that
MAX_METHOD_CHARS = 64  # of a method name in a line (a client may send any string)
MAX_REASON_CHARS = 200  # of a reason in a line (an unknown parameter's name is the client's)

WARNING_CODES = frozenset({UNAUTHORIZED, FORBIDDEN, NO_CONSENT, BAD_AUTH_SIGNATURE,
                           TOO_MANY_FAILURES})  # a caller refused access
DEBUG_CODES = frozenset({NOT_FOUND, TX_DROPPED})  # routine answers to correct clients


def _rule_names() -> dict[int, str]:
    """Each chain rule's code and its name as admission counts it (``stale_sequence``; a
    subclass sharing its parent's code: the parent's)."""
    names: dict[int, str] = {}
    todo: list[type[RuleError]] = [RuleError]
    while todo:
        rule = todo.pop(0)
        names.setdefault(rule.code, reason_name(rule))
        todo += rule.__subclasses__()
    return names


RULE_NAMES = _rule_names()
# messages that may name a device, a stream or a key: logged by a fixed reason
_FIXED_REASONS = RULE_NAMES | {TX_DROPPED: "transaction was dropped (get_tx_status says why)"}


def level_of(code: int) -> int:
    """The level (``logging``'s) a refusal with ``code`` is logged at (module docstring)."""
    if code in WARNING_CODES:
        return logging.WARNING
    return logging.DEBUG if code in DEBUG_CODES else logging.INFO


def reason_of(error: RpcError) -> str:
    """What a line says of why: never a key, a payload or a token (module docstring)."""
    fixed = _FIXED_REASONS.get(error.code)
    if fixed is not None:
        return fixed
    if error.code == UNAUTHORIZED and isinstance(error.data, str):
        return error.data  # which of: missing, not a string, wrong
    return error.message[:MAX_REASON_CHARS]


@dataclass(frozen=True, slots=True)
class ClientRefusals:
    """The refusals of one client (by its address key), as the dispatcher and the methods
    tell them (:class:`~iomtnode.api.jsonrpc.Refused`)."""

    log: RefusalLog
    address: str

    def __call__(self, method: str | None, error: RpcError) -> None:
        """A request calling ``method`` (None: none could be read) was refused with ``error``."""
        self.log.refused(self.address, method, error)

    def transactions(self, method: str | None, refused: int, of: int, first: RpcError) -> None:
        """``refused`` of a batch's ``of`` transactions were refused, the first with ``first``."""
        self.log.transactions_refused(self.address, method, refused, of, first)


@dataclass(slots=True)
class _Window:
    """One address's lines in the current window, and what it suppressed."""

    lines: int = 0
    suppressed: Counter[int] = field(default_factory=Counter)  # by code
    level: int = logging.DEBUG  # of the most severe suppressed


class RefusalLog:
    """Counts and logs refused requests, boundedly (see the module docstring). One per API
    server, shared by its connections; :meth:`run` in the server's nursery."""

    def __init__(self, *, lines_per_window: int = REFUSAL_LINES_PER_WINDOW,
                 window_s: float = REFUSAL_WINDOW_S,
                 max_addresses: int = MAX_REFUSAL_ADDRESSES) -> None:
        self._lines = lines_per_window
        self._window_s = window_s
        self._max_addresses = max_addresses
        self._windows: dict[str, _Window] = {}
        self._window_ends = -math.inf  # trio time
        self._counts: Counter[int] = Counter()
        self._opened = trio.lowlevel.ParkingLot()  # run() waits here while no window is open

    def counts(self) -> dict[int, int]:
        """Refusals since the start, by code."""
        return dict(self._counts)

    def client(self, address: str) -> ClientRefusals:
        """What the refusals of the client at ``address`` (its address key) are told to."""
        return ClientRefusals(self, address)

    def refused(self, address: str, method: str | None, error: RpcError) -> None:
        """A request from the client at ``address`` (its address key) calling ``method`` was
        refused with ``error``: count it, and log it unless the address has had its lines in
        this window."""
        code = error.code
        self._counts[code] += 1
        level = level_of(code)
        address = self._line(address, code, level)
        if address is None:
            return
        reason = reason_of(error)
        if method is not None:
            method = method[:MAX_METHOD_CHARS]
        if code == UNAUTHORIZED:
            log.log(level, "api_admin_refused", method=method, code=code, reason=reason,
                    address=address)
        else:
            log.log(level, "api_request_refused", method=method, code=code, reason=reason,
                    address=address)

    def transactions_refused(self, address: str, method: str | None, refused: int, of: int,
                             first: RpcError) -> None:
        """``refused`` of the ``of`` transactions of a batch (answered one by one) from the
        client at ``address`` were refused, the first with ``first``: log it (one line per
        batch, ``api_transactions_refused`` at info) unless the address has had its lines in
        this window. Not counted as a refused request: the batch was answered."""
        address = self._line(address, first.code, logging.INFO)
        if address is not None:
            log.info("api_transactions_refused", method=method, refused=refused, of=of,
                     code=first.code, reason=reason_of(first), address=address)

    def _line(self, address: str, code: int, level: int) -> str | None:
        """The address to log a line of ``code`` under (``address``, or
        :data:`OTHER_ADDRESSES` when too many are followed); None if its window has had its
        lines (the line is counted as suppressed)."""
        now = trio.current_time()
        if now >= self._window_ends:
            self.end_window()
            self._window_ends = (math.floor(now / self._window_s) + 1) * self._window_s
        window = self._windows.get(address)
        if window is None:
            if len(self._windows) >= self._max_addresses:
                address = OTHER_ADDRESSES
            window = self._windows.get(address)
            if window is None:
                window = self._windows[address] = _Window()
                self._opened.unpark_all()
        if window.lines >= self._lines:
            window.suppressed[code] += 1
            window.level = max(window.level, level)
            return None
        window.lines += 1
        return address

    def end_window(self) -> None:
        """End the current window: log what each address had suppressed in it."""
        windows, self._windows = self._windows, {}
        for address, window in windows.items():
            if window.suppressed:
                log.log(window.level, "api_refusals_suppressed", address=address,
                        suppressed=window.suppressed.total(), window_s=self._window_s,
                        logged=window.lines,
                        codes={str(code): n for code, n in sorted(window.suppressed.items())})

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """End each window when its time is up, so what it suppressed is logged then (not at
        the address's next refusal). Never returns unless cancelled; sleeps while no window
        is open."""
        task_status.started()
        while True:
            if not self._windows:
                await self._opened.park()
                continue
            ends = self._window_ends
            await trio.sleep_until(ends)
            if self._window_ends == ends:  # no refusal has ended it meanwhile
                self.end_window()
