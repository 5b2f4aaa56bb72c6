"""Catch-up progress: its figures, a log line a second, and a progress bar on a terminal."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

LOG_EVERY_S = 1.0
BAR_WHEN_BEHIND_BLOCKS = 100  # a bar is shown only when this far behind


@dataclass(frozen=True, slots=True)
class SyncStats:
    """Block sync's figures at one moment (``status``, metrics)."""
    target: int  # the height sync heads for (the node's own when level)
    catch_ups: tuple[dict[str, int | float], ...]  # the last ones (copies), oldest first
    synced_blocks: int  # blocks committed by catch-up since the start (not by live relay)
    signatures_verified: int  # transaction signatures its catch-ups verified


class SyncProgress:
    """Called with (height, target) after each synced block."""

    def __init__(self, *, bar: bool | None = None) -> None:
        self._bar_enabled = sys.stderr.isatty() if bar is None else bar
        self._bar = None
        self._task = None
        self._last_log = 0.0
        self._last_height = 0

    def __call__(self, height: int, target: int) -> None:
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY_S or height >= target:
            rate = (height - self._last_height) / max(now - self._last_log, 1e-9)
            log.info("sync_progress", height=height, target=target,
                     blocks_per_s=round(rate, 1) if self._last_log else None)
            self._last_log, self._last_height = now, height
        if not self._bar_enabled:
            return
        if self._bar is None and target - height >= BAR_WHEN_BEHIND_BLOCKS:
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._bar.start()
            self._task = self._bar.add_task("syncing blocks", total=target)
        if self._bar is not None:
            self._bar.update(self._task, completed=height, total=target)
            if height >= target:
                self._bar.stop()
                self._bar = None
