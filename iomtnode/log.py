"""Logging: structlog to stderr; a console renderer on a terminal, JSON lines otherwise.

Events are snake_case facts in the past tense (``block_committed``) with data in keys.
stdout is left to command results, so scripts can pipe them.

What a remote party can repeat at will (a refused connection) is logged through
:class:`OncePer`: one line per address and interval, which says how many were left out.
"""

from __future__ import annotations

import logging
import sys
from collections import OrderedDict

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


def configure(level: str = "info", *, json: bool | None = None) -> None:
    """Set up structlog for the process. ``json=None`` picks by whether stderr is a TTY."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
    if json is None:
        json = not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=True)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


class OncePer:
    """One log line per key (an address) per ``interval_s`` seconds; the others are counted.

    A client connecting and closing in a loop made a node write one line per connection
    (340 kB of log a second). At most ``max_keys`` keys are remembered, the least recently
    used forgotten first (its next line is then logged at once)."""

    def __init__(self, interval_s: float, max_keys: int) -> None:
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._logged: OrderedDict[str, tuple[float, int]] = OrderedDict()  # key -> (last line
        # at, events not logged since)

    def unlogged(self, key: str, now: float) -> int | None:
        """An event of ``key`` at ``now`` (seconds, monotonic): None if it is not to be
        logged (it is counted), else how many of ``key``'s were not logged since its last
        line (0 for its first in ``interval_s``)."""
        at, skipped = self._logged.pop(key, (None, 0))
        if at is not None and now - at < self.interval_s:
            self._logged[key] = (at, skipped + 1)
            return None
        self._logged[key] = (now, 0)
        while len(self._logged) > self.max_keys:
            self._logged.popitem(last=False)
        return skipped
