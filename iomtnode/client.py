"""An async client of a node's API (JSON-RPC over websocket, plus msgpack binary frames).

One connection, one reader task: replies are matched to requests by id, notifications
(e.g. from ``subscribe_blocks``) go to a bounded channel. Used by the CLI, the simulator
and the tests.

``wss://`` URLs speak TLS 1.3 and verify the node's certificate against the system's trusted
roots, or against ``ca`` (a PEM file, e.g. the node's self-signed certificate) when given;
verification is never turned off. :meth:`ApiClient.authenticate` proves a key on the
connection (the signature covers the certificate the client saw: see
:mod:`iomtnode.core.challenge`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    connect_websocket_url,
    wrap_client_stream,
)

from .core import codec
from .core.challenge import challenge_digest, tls_server_end_point
from .core.crypto import Domain, SigningKey

API_PATH = "/api/v1"
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0  # a close on a dead link can hang without a deadline
NOTIFICATION_QUEUE = 4096  # notifications buffered for a slow reader before dropping
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # replies can hold whole blocks
RECEIVE_BUFFER_BYTES = 256 * 1024  # read from the socket at once (trio-websocket: 4 KiB)


class ApiError(Exception):
    """A JSON-RPC error answer: ``code`` and ``message`` as the node sent them."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data


class ClientSetupError(ValueError):
    """A URL or CA file the client cannot connect with (says which and why)."""


class ApiClient:
    """``binding``: the connection's TLS channel binding, from the certificate this client
    received (empty over plain ``ws://``)."""

    def __init__(self, ws: WebSocketConnection, binding: bytes = b"") -> None:
        self._ws = ws
        self.binding = binding
        self._ids = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[Any]] = {}
        self._notify_send, self.notifications = trio.open_memory_channel[dict[str, Any]](
            NOTIFICATION_QUEUE
        )

    async def _read(self) -> None:
        try:
            while True:
                message = await self._ws.get_message()
                if isinstance(message, bytes):
                    reply = codec.decode(message)
                    channel = self._waiting.pop(reply[0], None)
                else:
                    reply = json.loads(message)
                    if "id" not in reply:
                        # a reader this slow loses notifications, not the connection
                        with contextlib.suppress(trio.WouldBlock):
                            self._notify_send.send_nowait(reply)
                        continue
                    channel = self._waiting.pop(reply["id"], None)
                if channel is not None:
                    channel.send_nowait(reply)
        except ConnectionClosed:
            pass
        finally:
            for channel in self._waiting.values():
                channel.close()
            self._notify_send.close()

    async def call(self, method: str, **params: Any) -> Any:
        """Call ``method``; return its result or raise :class:`ApiError`."""
        request_id = next(self._ids)
        send, receive = trio.open_memory_channel[Any](1)
        self._waiting[request_id] = send
        await self._ws.send_message(json.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        ))
        try:
            reply = await receive.receive()
        except trio.EndOfChannel:
            raise ConnectionError("the node closed the connection") from None
        if "error" in reply:
            err = reply["error"]
            raise ApiError(err["code"], err["message"], err.get("data"))
        return reply["result"]

    async def authenticate(self, key: SigningKey, chain_id: str | None = None) -> list[str]:
        """Prove ``key`` on this connection (``auth_challenge``, then ``authenticate``);
        returns the keys the connection now carries. ``chain_id``: the chain to sign on
        (default: the one the node names in its challenge)."""
        challenge = await self.call("auth_challenge")
        digest = challenge_digest(bytes.fromhex(challenge["nonce"]), self.binding)
        signature = key.sign(Domain.API_AUTH, chain_id or challenge["chain_id"], digest)
        result = await self.call("authenticate", public_key=key.public.hex(),
                                 signature=signature.hex())
        return list(result["keys"])

    async def submit_binary(self, txs: list[bytes]) -> list[list[Any]]:
        """Submit raw transactions in one msgpack frame; one [0, id] or [code, msg] each."""
        request_id = next(self._ids)
        send, receive = trio.open_memory_channel[Any](1)
        self._waiting[request_id] = send
        await self._ws.send_message(codec.encode([request_id, txs]))
        try:
            reply = await receive.receive()
        except trio.EndOfChannel:
            raise ConnectionError("the node closed the connection") from None
        return reply[1]


def client_context(ca: Path | str | None = None) -> ssl.SSLContext:
    """A client TLS 1.3 context that verifies the server's certificate and host name, against
    ``ca`` (a PEM file) if given, else the system's trusted roots."""
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise ClientSetupError(f"cannot use the CA file {ca}: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


@asynccontextmanager
async def open_client(url: str, *, ca: Path | str | None = None) -> AsyncIterator[ApiClient]:
    """Connect to a node's API at ``url`` (ws://host:port/api/v1, or wss:// for TLS, whose
    certificate is checked against ``ca`` if given, see :func:`client_context`); closes on
    exit."""
    parts = urlsplit(url)
    if parts.scheme != "wss":
        if ca is not None:
            raise ClientSetupError(f"a CA file is for wss:// URLs, not {url}")
        async with trio.open_nursery() as nursery:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                ws = await connect_websocket_url(nursery, url, max_message_size=MAX_MESSAGE_BYTES,
                                                 receive_buffer_size=RECEIVE_BUFFER_BYTES)
            async with _serve(nursery, ws) as client:
                yield client
        return
    if parts.hostname is None:
        raise ClientSetupError(f"no host in {url}")
    context = client_context(ca)
    with trio.fail_after(CONNECT_TIMEOUT_S):  # a certificate not trusted raises here, plainly
        stream, binding = await _open_tls(parts.hostname, parts.port or 443, context)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    async with _open_on(stream, parts.hostname, resource, binding) as client:
        yield client


async def _open_tls(host: str, port: int, context: ssl.SSLContext
                    ) -> tuple[trio.SSLStream[trio.SocketStream], bytes]:
    """A TLS stream to ``host:port``, handshake done, and its channel binding."""
    stream = await trio.open_ssl_over_tcp_stream(host, port, ssl_context=context)
    try:
        await stream.do_handshake()
        cert = stream.getpeercert(binary_form=True)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    assert cert is not None  # a verified handshake has the server's certificate
    return stream, tls_server_end_point(cert)


@asynccontextmanager
async def open_client_on(stream: trio.abc.Stream, host: str) -> AsyncIterator[ApiClient]:
    """As :func:`open_client`, on ``stream``, already connected to the API listener at
    ``host`` (a test's in-memory network, say); closes on exit."""
    async with _open_on(stream, host, API_PATH, b"") as client:
        yield client


@asynccontextmanager
async def _open_on(stream: trio.abc.Stream, host: str, resource: str, binding: bytes
                   ) -> AsyncIterator[ApiClient]:
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                ws = await wrap_client_stream(nursery, stream, host, resource,
                                              max_message_size=MAX_MESSAGE_BYTES,
                                              receive_buffer_size=RECEIVE_BUFFER_BYTES)
            async with _serve(nursery, ws, binding) as client:
                yield client
    finally:
        await trio.aclose_forcefully(stream)  # closed already unless the upgrade failed


@asynccontextmanager
async def _serve(nursery: trio.Nursery, ws: WebSocketConnection, binding: bytes = b""
                 ) -> AsyncIterator[ApiClient]:
    client = ApiClient(ws, binding)
    nursery.start_soon(client._read)
    try:
        yield client
    finally:
        with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
            await ws.aclose()
        nursery.cancel_scope.cancel()
