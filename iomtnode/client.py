"""An async client of a node's API (JSON-RPC over websocket, plus msgpack binary frames).

One connection, one reader task: replies are matched to requests by id, notifications
(e.g. from ``subscribe_blocks``) go to a bounded channel. Used by the CLI, the simulator
and the tests. :class:`BlockFollower` follows committed blocks across reconnections and
ended subscriptions, resuming with ``since_height``, so its reader sees every block once.

``wss://`` URLs speak TLS 1.3 and verify the node's certificate against the system's trusted
roots, or against ``ca`` (a PEM file, e.g. the node's self-signed certificate) when given;
verification is never turned off. :meth:`ApiClient.authenticate` proves a key on the
connection (the signature covers the certificate the client saw: see
:mod:`iomtnode.core.challenge`).
"""

from __future__ import annotations

import itertools
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    connect_websocket_url,
    wrap_client_stream,
)

from .core import codec
from .core.challenge import challenge_digest, tls_server_end_point
from .core.crypto import Domain, SigningKey
from .service import single_exception

log = structlog.get_logger(__name__)

API_PATH = "/api/v1"
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0  # a close on a dead link can hang without a deadline
NOTIFICATION_QUEUE = 4096  # notifications buffered for a slow reader before dropping
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # replies can hold whole blocks
RECEIVE_BUFFER_BYTES = 256 * 1024  # read from the socket at once (trio-websocket: 4 KiB)
FOLLOW_QUEUE_BLOCKS = 256  # blocks a BlockFollower holds for its reader before it waits
FOLLOW_RETRY_S = 1.0  # a BlockFollower connects again after this
FOLLOW_SILENCE_S = 30.0  # ... or asks the node's status after this long without a notification
HEIGHT_NOT_HELD = -32030  # the API's answer to a since_height the node does not hold (yet)


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
        self.notifications_dropped = 0  # not queued: the reader of ``notifications`` was slow

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
                        try:
                            self._notify_send.send_nowait(reply)
                        except trio.WouldBlock:
                            self.notifications_dropped += 1
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


RETRIED = (OSError, ConnectionError, ConnectionClosed, HandshakeError, trio.TooSlowError,
           ApiError)  # a BlockFollower connects again after these (once it has started)


class BlockFollower:
    """Every committed block from ``since_height`` on, once each and in order, on
    :attr:`blocks` (the ``block`` notifications' params), over as many connections as it takes.

    When the node ends the subscription (a subscriber that fell behind, a node shutting down),
    the connection breaks, or a block is missing (this client dropped a notification), it
    connects again after :data:`FOLLOW_RETRY_S` and resubscribes with ``since_height`` the
    height after the last block it passed on (the node replays from there). A node silent for
    :data:`FOLLOW_SILENCE_S` is asked its ``status``; no answer: connect again. A reader that
    does not take its blocks holds this follower back; the connection's notifications then
    overflow and it resumes from the block after the last one taken: nothing is lost.
    """

    def __init__(self, url: str, since_height: int, *, ca: Path | str | None = None) -> None:
        self.url = url
        self.ca = ca
        self.next_height = since_height  # the next block to pass on
        self.resubscribed = 0  # times it subscribed again
        self._send, self.blocks = trio.open_memory_channel[dict[str, Any]](FOLLOW_QUEUE_BLOCKS)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Subscribe, report started, then pass blocks on until cancelled. The first
        subscription's failure is raised (a wrong URL, a height the node does not hold);
        later ones are retried."""
        started = False
        while True:
            try:
                async with open_client(self.url, ca=self.ca) as client:
                    await client.call("subscribe_blocks", since_height=self.next_height)
                    if not started:
                        task_status.started()
                        started = True
                    reason = await self._forward(client)
            except (*RETRIED, BaseExceptionGroup) as raised:  # open_client's nursery wraps
                exc = single_exception(raised)
                if not isinstance(exc, RETRIED):
                    raise
                if not started or (isinstance(exc, ApiError) and exc.code != HEIGHT_NOT_HELD):
                    raise exc from None
                reason = str(exc)  # e.g. the node restarted behind this height: wait for it
            self.resubscribed += 1
            log.info("block_subscription_resuming", since_height=self.next_height,
                     reason=reason, url=self.url)
            await trio.sleep(FOLLOW_RETRY_S)

    async def _forward(self, client: ApiClient) -> str:
        """Pass on the blocks of one subscription; returns why it ended."""
        while True:
            with trio.move_on_after(FOLLOW_SILENCE_S) as quiet:
                try:
                    note = await client.notifications.receive()
                except trio.EndOfChannel:
                    return "connection closed"
            if quiet.cancelled_caught:
                with trio.fail_after(CONNECT_TIMEOUT_S):
                    await client.call("status")  # raises if the connection is dead
                continue
            if client.notifications_dropped:
                return "notifications dropped by this client"
            params = note.get("params") or {}
            if note.get("method") == "block":
                height = params["height"]
                if height > self.next_height:
                    return f"block {height} came after {self.next_height - 1}"
                if height == self.next_height:
                    await self._send.send(params)
                    self.next_height = height + 1
            elif (note.get("method") == "subscription_ended"
                  and params.get("subscription") == "blocks"):
                return str(params.get("reason"))
