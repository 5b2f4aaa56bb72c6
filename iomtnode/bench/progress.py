"""Progress of a benchmark run: one step at a time, each a bar (or a spinner), on stderr."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class Reporter(Protocol):
    """Told about each step of a run: its start, its progress, its end."""

    def begin(self, label: str, total: float | None = None) -> None: ...
    def advance(self, completed: float, note: str = "") -> None: ...
    def end(self, note: str = "") -> None: ...


class NullReporter:
    """Reports nothing (library use, tests)."""

    def begin(self, label: str, total: float | None = None) -> None:
        pass

    def advance(self, completed: float, note: str = "") -> None:
        pass

    def end(self, note: str = "") -> None:
        pass


class RichReporter:
    """A rich progress bar per step (a spinner when the step has no total)."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None
        self._total: float | None = None

    def begin(self, label: str, total: float | None = None) -> None:
        self._total = round(total) if total else None
        self._task = self._progress.add_task(label, total=self._total, note="")

    def advance(self, completed: float, note: str = "") -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=max(0, round(completed)), note=note)

    def end(self, note: str = "") -> None:
        if self._task is None:
            return
        task = self._progress.tasks[self._task]
        done = task.completed if self._total else 1
        self._progress.update(self._task, total=done or 1, completed=done or 1, note=note)
        self._progress.stop_task(self._task)
        self._task = None


@contextmanager
def rich_reporter(console: Console | None = None) -> Iterator[RichReporter]:
    """A :class:`RichReporter` drawing on ``console`` (default: stderr) while the block runs."""
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=20),
        MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[note]}"),
        console=console or Console(stderr=True),
    )
    with progress:
        yield RichReporter(progress)
