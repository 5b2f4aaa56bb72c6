"""Short-lived API calls to localnet nodes, each under a deadline.

A localnet node may be down, paused (its socket accepts, nothing answers) or restarting, so
every call here has its own timeout and failures come back as :class:`NodeUnreachable`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError

from ..client import ApiError, open_client
from ..service import single_exception

CALL_TIMEOUT_S = 5.0


class NodeUnreachable(ConnectionError):
    """A node that did not answer (refused, closed, or silent past the deadline)."""


async def call_api(url: str, method: str, *, timeout_s: float = CALL_TIMEOUT_S,
                   **params: Any) -> Any:
    """One JSON-RPC call on a fresh connection; raises ApiError or NodeUnreachable."""
    try:
        with trio.fail_after(timeout_s):
            async with open_client(url) as client:
                return await client.call(method, **params)
    except trio.TooSlowError:
        raise NodeUnreachable(f"{url} did not answer {method} within {timeout_s} s") from None
    except (OSError, HandshakeError, ConnectionClosed) as exc:
        raise NodeUnreachable(f"{url}: {exc}") from None
    except BaseExceptionGroup as group:
        exc = single_exception(group)
        if isinstance(exc, ApiError):
            raise exc from None
        if isinstance(exc, OSError | HandshakeError | ConnectionClosed):
            raise NodeUnreachable(f"{url}: {exc}") from None
        raise


async def blocks(url: str, heights: Sequence[int], *, timeout_s: float) -> list[dict[str, Any]]:
    """``get_block`` of each of ``heights``, over one connection (NodeUnreachable if the node
    does not answer them all within ``timeout_s``)."""
    found: list[dict[str, Any]] = []
    try:
        with trio.fail_after(timeout_s):
            async with open_client(url) as client:
                for height in heights:
                    found.append(await client.call("get_block", height=height))
    except trio.TooSlowError:
        raise NodeUnreachable(f"{url} did not return {len(heights)} blocks within "
                              f"{timeout_s} s") from None
    except BaseExceptionGroup as group:
        exc = single_exception(group)
        if isinstance(exc, OSError | HandshakeError | ConnectionClosed):
            raise NodeUnreachable(f"{url}: {exc}") from None
        if isinstance(exc, ApiError):
            raise exc from None
        raise
    except (OSError, HandshakeError, ConnectionClosed) as exc:
        raise NodeUnreachable(f"{url}: {exc}") from None
    return found


async def block_hashes(url: str, heights: Sequence[int], *, timeout_s: float) -> list[str]:
    """The hashes of the blocks at ``heights``, over one connection."""
    return [block["hash"] for block in await blocks(url, heights, timeout_s=timeout_s)]


async def gather(calls: dict[str, Any]) -> dict[str, Any]:
    """Await several zero-argument async callables at once: {key: result or the exception}.

    Only :class:`ApiError` and :class:`NodeUnreachable` are captured; anything else is a bug
    and propagates.
    """
    results: dict[str, Any] = {}

    async def one(key: str, fn: Any) -> None:
        try:
            results[key] = await fn()
        except (ApiError, NodeUnreachable) as exc:
            results[key] = exc

    async with trio.open_nursery() as nursery:
        for key, fn in calls.items():
            nursery.start_soon(one, key, fn)
    return results
