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
import math
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
FOLLOW_RETRY_S = 1.0  # a BlockFollower connects again after this, doubled per failed attempt
FOLLOW_RETRY_MAX_S = 30.0  # ... up to this
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
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is no number
    except ValueError as exc:
        raise ClientSetupError(f"cannot use the URL {url}: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise ClientSetupError(f"cannot use the URL {url}: the API speaks websocket, so give "
                               "HOST:PORT, ws://HOST:PORT or, with TLS, wss://HOST:PORT")
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
        # cancelled from outside, the reader is cancelled too: no close reply can be read,
        # so the stream is closed at once instead of waiting CLOSE_TIMEOUT_S for one
        cancelled = trio.current_effective_deadline() == -math.inf
        with trio.move_on_after(0 if cancelled else CLOSE_TIMEOUT_S, shield=True):
            await ws.aclose()
        nursery.cancel_scope.cancel()


RETRIED = (OSError, ConnectionError, ConnectionClosed, HandshakeError, trio.TooSlowError,
           ApiError)  # a BlockFollower connects again after these (ApiError: see its run)


class FollowGaveUp(ConnectionError):
    """A :class:`BlockFollower` that held no subscription for its ``retry_for_s``."""


class BlockFollower:
    """Every committed block from ``since_height`` on (None: from the block after the node's
    head when it first answers), once each and in order, on :attr:`blocks` (the ``block``
    notifications' params), over as many connections as it takes.

    When the node ends the subscription (a subscriber that fell behind, a node shutting down),
    the connection breaks or cannot be made (the node is down, at the start or later), or a
    block is missing (this client dropped a notification), it connects again and resubscribes
    with ``since_height`` the height after the last block it passed on (the node replays from
    there): after :data:`FOLLOW_RETRY_S`, doubled after each attempt that did not subscribe,
    up to :data:`FOLLOW_RETRY_MAX_S`. Each failed attempt is logged at warning
    (``block_subscription_failed``, with the reason and the wait). After ``retry_for_s``
    without a subscription (since the last one ended, or since the start) it gives up:
    :class:`FollowGaveUp`. A node silent for :data:`FOLLOW_SILENCE_S` is asked its ``status``;
    no answer: connect again. A reader that does not take its blocks holds this follower
    back; the connection's notifications then overflow and it resumes from the block after
    the last one taken: nothing is lost.
    """

    def __init__(self, url: str, since_height: int | None, *, ca: Path | str | None = None,
                 retry_for_s: float = math.inf) -> None:
        self.url = url
        self.ca = ca
        self.retry_for_s = retry_for_s
        self.next_height = since_height  # the next block to pass on (None: not known yet)
        self.resubscribed = 0  # times it subscribed again
        self._send, self.blocks = trio.open_memory_channel[dict[str, Any]](FOLLOW_QUEUE_BLOCKS)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Subscribe, report started, then pass blocks on until cancelled or it gives up
        (:class:`FollowGaveUp`); :attr:`blocks` is closed when it returns, so a reader takes
        every block passed on and then sees the end.

        Error handling: a connection that fails or breaks is retried (see the class). What
        waiting cannot mend is raised at once: a URL or CA file it cannot use
        (:class:`ClientSetupError`), a certificate that does not verify, and an
        :class:`ApiError` answer (a height the node does not hold, at the first subscription:
        later, the node may have restarted behind it, and that is waited for)."""
        started = False
        lost_at = trio.current_time()  # no subscription since
        wait_s = FOLLOW_RETRY_S
        try:  # closed without a checkpoint: its reader wakes after the raise is handled
            while True:
                subscribed = False
                try:
                    async with open_client(self.url, ca=self.ca) as client:
                        if self.next_height is None:
                            self.next_height = (await client.call("status"))["height"] + 1
                        await client.call("subscribe_blocks", since_height=self.next_height)
                        subscribed = True
                        if not started:
                            task_status.started()
                            started = True
                        reason = await self._forward(client)
                except (*RETRIED, trio.BrokenResourceError, BaseExceptionGroup) as raised:
                    exc = single_exception(raised)  # open_client's nursery wraps
                    if not _retried(exc, started):
                        if not isinstance(exc, Exception):
                            raise  # a cancellation, as it came
                        raise exc from None
                    reason = str(exc) or type(exc).__name__
                now = trio.current_time()
                if subscribed:
                    lost_at, wait_s = now, FOLLOW_RETRY_S
                    self.resubscribed += 1
                    log.info("block_subscription_resuming", since_height=self.next_height,
                             reason=reason, url=self.url)
                else:
                    if now - lost_at >= self.retry_for_s:
                        raise FollowGaveUp(
                            f"no block subscription at {self.url} for {now - lost_at:.1f} s "
                            f"(last attempt: {reason})")
                    wait_s = min(wait_s, lost_at + self.retry_for_s - now)
                    gives_up_in_s = lost_at + self.retry_for_s - now  # inf: never (null)
                    log.warning("block_subscription_failed", url=self.url, reason=reason,
                                since_height=self.next_height, retry_in_s=round(wait_s, 3),
                                gives_up_in_s=round(gives_up_in_s, 3)
                                if math.isfinite(gives_up_in_s) else None)
                await trio.sleep(wait_s)
                if not subscribed:
                    wait_s = min(2 * wait_s, FOLLOW_RETRY_MAX_S)
        finally:
            self._send.close()

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


def _retried(exc: BaseException, started: bool) -> bool:
    """Whether a :class:`BlockFollower` connects again after ``exc``."""
    if isinstance(exc, ApiError):
        return started and exc.code == HEIGHT_NOT_HELD  # the node restarted behind it
    if isinstance(exc, trio.BrokenResourceError):  # a TLS handshake cut, or refused by us
        return not isinstance(exc.__cause__, ssl.SSLCertVerificationError)
    return isinstance(exc, RETRIED)
