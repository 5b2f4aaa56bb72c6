"""Running a service as a process: until SIGINT or SIGTERM, then a clean shutdown; and a
command that SIGTERM cancels the way Ctrl-C does."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import trio

log = structlog.get_logger(__name__)


def single_exception(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (trio nurseries)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def run_until_signal(service: Callable[..., Awaitable[Any]]) -> None:
    """Run ``service`` (a ``run(*, task_status)`` function) until it returns or a signal.

    The service's own ``finally`` blocks run on the way out, so a node closes its store.
    """
    await _until_signal((signal.SIGINT, signal.SIGTERM), service)


TERMINATED_EXIT = 143  # 128 + SIGTERM, as a shell reports a process a SIGTERM ended


class Terminated(Exception):
    """SIGTERM ended the command, after it stopped what it had started."""

    def __init__(self) -> None:
        super().__init__("terminated by SIGTERM; what it started is stopped")


async def stop_on_sigterm(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run ``fn(*args)``; SIGTERM cancels it, so the processes, namespaces and files it
    started are cleaned up on the way out as on Ctrl-C (without this, SIGTERM ends a Python
    process at once, its ``finally`` blocks unrun); then raises :class:`Terminated`."""
    done = await _until_signal((signal.SIGTERM,), fn, *args)
    if not done:
        raise Terminated
    return done[0]


async def _until_signal(signums: tuple[int, ...], fn: Callable[..., Awaitable[Any]],
                        *args: Any) -> list[Any]:
    """``[fn(*args)]`` once it returns, or ``[]`` if one of ``signums`` came first and
    cancelled it (logged ``signal_received``)."""
    done: list[Any] = []
    with trio.open_signal_receiver(*signums) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for signum in signals:
                    log.info("signal_received", signal=signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch)
            done.append(await fn(*args))
            nursery.cancel_scope.cancel()  # it ended by itself
    return done
