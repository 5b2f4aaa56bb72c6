"""Short-lived API calls to localnet nodes, each under a deadline.

A localnet node may be down, paused (its socket accepts, nothing answers) or restarting, so
every call here has its own timeout and failures come back as :class:`NodeUnreachable`.
A node whose API speaks TLS is reached at its ``wss://`` URL trusting its own certificate
(:class:`Endpoint`); a certificate that does not verify is :class:`NodeTlsError`, at once,
since waiting cannot mend it.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import trio
from trio_websocket import ConnectionClosed, HandshakeError

from ..client import ApiError, ClientSetupError, open_client
from ..service import single_exception
from .errors import LocalnetError

CALL_TIMEOUT_S = 5.0


class NodeUnreachable(ConnectionError):
    """A node that did not answer (refused, closed, or silent past the deadline)."""


class NodeTlsError(LocalnetError):
    """A node's API certificate that its localnet cannot use or that does not verify for the
    address the localnet reaches it at (names both and what to do)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A node's API: ``url`` (``ws://`` or ``wss://``) and, for ``wss://``, the PEM file of
    the certificate to trust (the node's ``api_tls_cert``; None: the system's roots)."""

    url: str
    ca: Path | None = None


def _failed(api: Endpoint, exc: BaseException) -> NoReturn:
    """Raise what ``exc``, met while calling ``api``, means to a localnet."""
    if isinstance(exc, ApiError):
        raise exc from None
    if isinstance(exc, ClientSetupError):
        raise NodeTlsError(f"{api.url}: {exc} (the node's api_tls_cert)") from None
    if isinstance(exc, trio.BrokenResourceError) and isinstance(
            exc.__cause__, ssl.SSLCertVerificationError):
        raise NodeTlsError(
            f"{api.url}: the node's API certificate {api.ca} does not verify: "
            f"{exc.__cause__.verify_message}; it must be valid now and its subjectAltName "
            f"must name the address the localnet uses (IP:{urlsplit(api.url).hostname})"
        ) from None
    if isinstance(exc, OSError | HandshakeError | ConnectionClosed | trio.BrokenResourceError):
        raise NodeUnreachable(f"{api.url}: {exc}") from None
    raise exc


async def call_api(api: Endpoint | str, method: str, *, timeout_s: float = CALL_TIMEOUT_S,
                   **params: Any) -> Any:
    """One JSON-RPC call on a fresh connection to ``api`` (a plain URL: no CA file);
    raises ApiError, NodeUnreachable or NodeTlsError."""
    api = api if isinstance(api, Endpoint) else Endpoint(api)
    try:
        with trio.fail_after(timeout_s):
            async with open_client(api.url, ca=api.ca) as client:
                return await client.call(method, **params)
    except trio.TooSlowError:
        raise NodeUnreachable(f"{api.url} did not answer {method} within {timeout_s} s"
                              ) from None
    except (OSError, HandshakeError, ConnectionClosed, trio.BrokenResourceError,
            ClientSetupError) as exc:
        _failed(api, exc)
    except BaseExceptionGroup as group:
        _failed(api, single_exception(group))


async def blocks(api: Endpoint, heights: Sequence[int], *, timeout_s: float
                 ) -> list[dict[str, Any]]:
    """``get_block`` of each of ``heights``, over one connection (NodeUnreachable if the node
    does not answer them all within ``timeout_s``)."""
    found: list[dict[str, Any]] = []
    try:
        with trio.fail_after(timeout_s):
            async with open_client(api.url, ca=api.ca) as client:
                for height in heights:
                    found.append(await client.call("get_block", height=height))
    except trio.TooSlowError:
        raise NodeUnreachable(f"{api.url} did not return {len(heights)} blocks within "
                              f"{timeout_s} s") from None
    except (OSError, HandshakeError, ConnectionClosed, trio.BrokenResourceError,
            ClientSetupError) as exc:
        _failed(api, exc)
    except BaseExceptionGroup as group:
        _failed(api, single_exception(group))
    return found


async def block_hashes(api: Endpoint, heights: Sequence[int], *, timeout_s: float
                       ) -> list[str]:
    """The hashes of the blocks at ``heights``, over one connection."""
    return [block["hash"] for block in await blocks(api, heights, timeout_s=timeout_s)]


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
