"""The P2P host: websocket connections to peers at ``/p2p/v1``, keyed by node id.

The host listens (or not), dials, has its :class:`~.transport.Transport` secure each connection
(TLS 1.3 by default), runs the handshake bound to it (:func:`.peer.authenticate`) under
``handshake_timeout_s`` and keeps at most one :class:`Peer` per node id; everything above the
transport is the ``handler``. A refusal is logged on the refusing side (``peer_refused`` with
``reason=``) and sent to the other side as the websocket close reason (code 1008), which logs
it there too.

One connection per node id. A new authenticated connection from a node id already connected
replaces the old one ("replaced by a new connection"): a node that moved or restarted comes
back at once. The exception is two nodes dialing each other at the same moment: if the old
connection is alive (a frame arrived within the last ping interval) and the two were dialed in
opposite directions, both sides keep the one **dialed by the node with the lower node id**
(bytes order) and refuse the other ("duplicate connection"). Both sides compute the same
answer, so they converge on one connection instead of each killing the one the other kept.
A silent old connection is always replaced. A dial for a node id (:meth:`Host.dial`) that
another node answers is refused, so it never replaces a connection. Slots, limits and
eviction: :mod:`.slots`; bans by node id and by address: :mod:`.score`.
"""

from __future__ import annotations

import os
from collections.abc import Container

import structlog
import trio
from trio_websocket import ConnectionRejected, WebSocketConnection, wrap_client_stream

from ..core.crypto import SigningKey
from . import refusal
from .acceptrate import AcceptRate
from .faults import Fault
from .handshake import HandshakeError
from .hostconfig import (
    P2P_PATH,
    RECEIVE_BUFFER_BYTES,
    RECEIVE_QUEUE_FRAMES,
    WRONG_NODE,
    DialError,
    HostHandler,
    P2PConfig,
)
from .messages import MAX_MESSAGE_BYTES, Message
from .peer import Counters, Peer, Traffic, authenticate, close_websocket, encode
from .score import Scoreboard
from .slots import Slots
from .tls import TlsTransport
from .transport import Transport, ip_of, split_address
from .upgrade import BAD_UPGRADE, accept_upgrade, refuse_unread, upgrade_failure

log = structlog.get_logger(__name__)

class Host:
    """Connections to peers, keyed by node id; see the module docstring.

    Every method but :meth:`run` needs :meth:`run` running: connections live in its nursery.
    """

    def __init__(self, config: P2PConfig, key: SigningKey, handler: HostHandler,
                 scoreboard: Scoreboard | None = None, *,
                 transport: Transport | None = None) -> None:
        """``transport`` (default: TLS 1.3 over TCP) gives and secures the connections."""
        self.config = config
        self.transport: Transport = transport or TlsTransport.over_tcp(config.tcp_user_timeout_ms)
        self.key = key
        self.node_id = key.public
        self.handler = handler
        self.scoreboard = (Scoreboard(ban_s=config.ban_s, address_ban_s=config.address_ban_s)
                           if scoreboard is None else scoreboard)
        self.slots = Slots(config.limits(), os.urandom(16))
        self.accepts = AcceptRate.for_limits(self.slots.limits)  # connections/s per IP, /24
        self.log = log.bind(node=self.node_id.hex()[:16])
        self._peers: dict[bytes, Peer] = {}
        self._refused: frozenset[bytes] = frozenset()
        self._totals = Counters()
        self._nursery: trio.Nursery | None = None
        self._listener: tuple[trio.CancelScope, trio.Event] | None = None
        self._listen_port: int | None = None

    # ---- service and listener -------------------------------------------------------------

    async def run(self, *,
                  task_status: trio.TaskStatus[int | None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, call ``task_status.started(port)`` (None if not listening), serve until
        cancelled. Never returns unless cancelled.

        Resource handling: on the way out every connection is closed ("node shutting down",
        1001, without waiting for the reply) and every socket dropped.
        Error handling: an OSError binding the listener propagates before ``started``.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            port = None
            if self.config.port is not None:
                port = await self._start_listener(self.config.host, self.config.port)
            task_status.started(port)
            await trio.sleep_forever()

    @property
    def listen_port(self) -> int | None:
        """The port the listener is bound to (None when not listening)."""
        return self._listen_port

    async def rebind(self, host: str, port: int) -> int:
        """The node moved: stop the listener, close every peer ("moved"), listen on
        ``host:port`` and return the port bound. The caller re-announces its record.

        Error handling: an OSError binding the new listener propagates, and nothing changed:
        the new listener is bound before the old one is closed.
        """
        old = self._listener
        port = await self._start_listener(host, port)
        if old is not None:
            old[0].cancel()
            await old[1].wait()  # the old socket is closed
        for peer in self.peers():
            self._drop(peer, "moved", code=1001)
        self.log.info("p2p_rebound", host=host, port=port)
        return port

    async def _start_listener(self, host: str, port: int) -> int:
        assert self._nursery is not None, "Host.run is not running"
        mine = (trio.CancelScope(), trio.Event())
        bound: int = await self._nursery.start(self._listen, host, port, mine)
        self._listener, self._listen_port = mine, bound
        self.log.info("p2p_listening", host=host, port=bound, path=P2P_PATH)
        return bound

    async def _listen(self, host: str, port: int, mine: tuple[trio.CancelScope, trio.Event], *,
                      task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        assert self._nursery is not None
        try:
            with mine[0]:  # connections live in the host's nursery: they outlive the listener
                await self.transport.listen(host, port, self.accept_stream, self._nursery,
                                            task_status=task_status)
        finally:
            if self._listener is mine:  # not replaced by a newer listener (rebind)
                self._listener = self._listen_port = None
            mine[1].set()

    # ---- connections ----------------------------------------------------------------------

    async def accept_stream(self, stream: trio.abc.Stream, remote: str) -> None:
        """Serve one inbound connection on ``stream`` (any trio Stream) until it closes.

        ``remote`` is the other end's ``"ip:port"``: its IP counts against the limits of
        :mod:`.slots` and :mod:`.acceptrate`; a banned IP, or one over its pending-handshake
        share or its connection rate, gets 503 unread.
        Resource handling: ``stream`` is closed before this returns. Error handling: logged.
        """
        ip, handshake, now = ip_of(remote), trio.CancelScope(), trio.current_time()
        early = ("address banned" if self.scoreboard.is_address_banned(ip, now)
                 else self.accepts.refusal(ip, now))  # before TLS: see .acceptrate
        refusal, evicted = (early, None) if early else self.slots.open_inbound(ip, handshake)
        if evicted is not None:
            self.log.info("peer_handshake_evicted", remote=remote, evicted=evicted)
        if refusal is not None:
            self.accepts.log_refused(self.log, remote, ip, refusal, now)  # not every one
            await refuse_unread(stream, refusal)
            return
        try:
            with handshake:  # cancelled only while pending, for a newcomer (see .slots)
                await self._connection(stream, remote, False, pending=handshake)
        finally:
            self.slots.close_inbound(ip)

    async def dial(self, address: str, node_id: bytes | None = None) -> Peer:
        """Connect to the node listening at ``address`` (``"host:port"``; a host name is
        resolved on every call); return the registered :class:`Peer`, whose connection then
        lives in the host's nursery. With ``node_id``, only that node is accepted there.

        Error handling: raises :class:`DialError` if the address is unreachable or banned, the
        dial or handshake times out, the peer rejects or refuses us, or we refuse it (another
        node than ``node_id`` answered: "answered by another node").
        """
        try:
            host, port = split_address(address)
            if self.scoreboard.is_address_banned(host, trio.current_time()):
                raise ValueError("address banned")
            with trio.fail_after(self.config.handshake_timeout_s):
                stream = await self.transport.connect(host, port)
        except (ValueError, OSError, trio.TooSlowError) as exc:
            reason = f"cannot connect to {address}: {exc or 'timed out'}"
            self.log.info("peer_dial_failed", address=address, reason=reason)
            raise DialError(reason) from None
        return await self.connect_stream(stream, address, node_id)

    async def connect_stream(self, stream: trio.abc.Stream, address: str,
                             node_id: bytes | None = None) -> Peer:
        """The client side of a connection on ``stream`` (any trio Stream) to the node at
        ``address``; as :meth:`dial` otherwise. ``stream`` is closed on failure."""
        assert self._nursery is not None, "Host.run is not running"
        peer: Peer = await self._nursery.start(self._connection, stream, address, True, node_id)
        return peer

    async def _connection(self, stream: trio.abc.Stream, remote: str, outbound: bool,
                          expect: bytes | None = None, *, pending: trio.CancelScope | None = None,
                          task_status: trio.TaskStatus[Peer] = trio.TASK_STATUS_IGNORED) -> None:
        """One connection from TLS to its close; an outbound one reports ``started(peer)``
        once registered, or raises DialError."""
        failure: str | None = None
        try:
            async with trio.open_nursery() as nursery:  # for trio-websocket's reader task
                try:
                    peer, failure = await self._establish(nursery, stream, remote, outbound,
                                                          expect)
                finally:
                    if pending is not None:
                        self.slots.handshake_over(pending)
                if peer is not None:
                    task_status.started(peer)
                    await self._serve_peer(peer)
                nursery.cancel_scope.cancel()
        except* (ConnectionRejected, *BAD_UPGRADE) as group:  # from a client's reader task
            failure = upgrade_failure(group)
            self.log.info("peer_dial_failed", address=remote, reason=failure)
        finally:
            await trio.aclose_forcefully(stream)
        if outbound and failure is not None:
            raise DialError(failure)

    async def _establish(self, nursery: trio.Nursery, stream: trio.abc.Stream, remote: str,
                         outbound: bool, expect: bytes | None
                         ) -> tuple[Peer | None, str | None]:
        """Upgrade, handshake, register: ``(peer, None)``, or ``(None, why not)`` after closing
        the websocket with the reason."""
        ws: WebSocketConnection | None = None
        try:
            with trio.fail_after(self.config.handshake_timeout_s):
                conn = await self.transport.secure(stream, remote, outbound=outbound)
                stream = conn.stream  # speak and close on the secured stream from here
                if outbound:
                    ws = await wrap_client_stream(
                        nursery, stream, remote, P2P_PATH,  # type: ignore[arg-type]
                        message_queue_size=RECEIVE_QUEUE_FRAMES, max_message_size=MAX_MESSAGE_BYTES,
                        receive_buffer_size=RECEIVE_BUFFER_BYTES)
                elif (ws := await accept_upgrade(nursery, stream, remote, lambda: (
                        self.slots.connection_refusal(ip_of(remote))
                        or self.slots.inbound_refusal(self.peers())), self.log)) is None:
                    return None, "rejected"
                hello, auth = await authenticate(ws, self.key, self.handler.local_hello(),
                                                 self.handler.local_record(), conn,
                                                 lambda node_id: self._admit(node_id, outbound,
                                                                             expect))
                cfg = self.config
                peer = Peer(ws, stream, hello=hello, remote=remote, outbound=outbound,
                            observed_address=auth.observed_address, record=auth.record,
                            send_queue=cfg.send_queue, ping_interval_s=cfg.ping_interval_s,
                            missed_pings=cfg.missed_pings, close_timeout_s=cfg.close_timeout_s,
                            totals=self._totals, logger=self.log)
                self._register(peer)
                return peer, None
        except refusal.FAILURES as exc:
            failed = refusal.failure(exc)
            code, reason = failed.code, failed.reason
            self.log.info(failed.event, remote=remote, reason=reason,
                          **({"by": "peer"} if failed.by_peer else {}))
            if failed.fault is not None:
                self._charge_address(remote, failed.fault)
        if ws is not None:
            await close_websocket(ws, stream, code, reason, self.config.close_timeout_s)
        return None, reason

    def _admit(self, node_id: bytes, outbound: bool, expect: bytes | None = None
               ) -> Peer | None:
        """Raise HandshakeError if a connection from ``node_id`` is refused now, else return
        the connection it would replace, if any. No side effects: it runs before our Auth is
        sent (a refused node never completes the handshake) and again to register."""
        now = trio.current_time()
        if expect is not None and node_id != expect:
            raise HandshakeError(f"{WRONG_NODE}: dialed {expect.hex()[:16]}, "
                                 f"{node_id.hex()[:16]} answered")
        if self.scoreboard.is_banned(node_id, now):
            raise HandshakeError("node banned")
        if node_id in self._refused:
            raise HandshakeError("node refused by this node's operator")
        old = self._peers.get(node_id)
        if old is not None and not old.closed:
            if old.outbound != outbound and old.alive(now, self.config.ping_interval_s):
                keep_outbound = self.node_id < node_id  # keep the one the lower id dialed
                if old.outbound == keep_outbound:
                    raise HandshakeError("duplicate connection (the one dialed by the lower "
                                         "node id is kept)")
            return old
        if outbound and len(self.peers()) >= self.config.max_peers:
            raise HandshakeError(f"max_peers ({self.config.max_peers}) reached")
        if not outbound and (full := self.slots.inbound_refusal(self.peers())) is not None:
            raise HandshakeError(full)
        return None

    def _register(self, peer: Peer) -> None:
        old = self._admit(peer.node_id, peer.outbound)
        if old is None and (closing := self._peers.get(peer.node_id)) is not None:
            self._unregister(closing, closing.close_reason or "closed")  # its task not done yet
        if old is not None:
            self._drop(old, "replaced by a new connection")
        elif not peer.outbound and (victim := self.slots.victim(self.peers())) is not None:
            victim.log.info("peer_evicted", by=peer.short_id)
            self._drop(victim, "evicted for a new inbound peer")
        self._peers[peer.node_id] = peer
        peer.log.info("peer_connected", direction="out" if peer.outbound else "in",
                      observed_address=peer.observed_address)

    async def _serve_peer(self, peer: Peer) -> None:
        try:
            try:
                await self.handler.on_connected(peer)
            except Exception:  # a bug above us: this peer goes, the node stays
                peer.log.exception("peer_failed")
                peer.close("internal error", code=1011)
            await peer.run(self.handler.on_message, self.penalize)
        finally:
            self._unregister(peer, peer.close_reason or "node shutting down")

    def _drop(self, peer: Peer, reason: str, *, code: int = 1000) -> None:
        peer.close(reason, code=code)
        self._unregister(peer, reason)

    def _unregister(self, peer: Peer, reason: str) -> None:
        if self._peers.get(peer.node_id) is peer:
            del self._peers[peer.node_id]
            peer.log.info("peer_disconnected", reason=reason)
            self.handler.on_disconnected(peer, reason)

    # ---- peers ----------------------------------------------------------------------------

    def peers(self) -> list[Peer]:
        """The connected peers (not those closing)."""
        return [p for p in self._peers.values() if not p.closed]

    def get(self, node_id: bytes) -> Peer | None:
        return None if (peer := self._peers.get(node_id)) is None or peer.closed else peer

    def broadcast(self, msg: Message, exclude: Container[bytes] = ()) -> int:
        """Queue ``msg``, encoded once, to every peer whose node id is not in ``exclude``;
        never waits. Returns how many peers took it (a slow one is dropped instead, see
        :meth:`Peer.send`)."""
        if not (targets := [peer for peer in self.peers() if peer.node_id not in exclude]):
            return 0
        frame = encode(msg)
        return sum(peer.send(frame) for peer in targets)

    def disconnect(self, node_id: bytes, reason: str) -> bool:
        """Close the connection to ``node_id`` with ``reason``; False if not connected."""
        peer = self.get(node_id)
        if peer is not None:
            self._drop(peer, reason)
        return peer is not None

    def ban(self, node_id: bytes, seconds: float, reason: str) -> None:
        """Disconnect ``node_id`` and refuse it for ``seconds``."""
        self.scoreboard.ban(node_id, seconds, trio.current_time())
        self.log.warning("peer_banned", peer=node_id.hex()[:16], seconds=seconds, reason=reason)
        self.disconnect(node_id, f"banned: {reason}")

    def penalize(self, peer: Peer, points: int, reason: str) -> bool:
        """Charge ``peer`` ``points`` for ``reason``; if its score falls below the threshold it
        is banned for ``ban_s``, disconnected, and this returns True."""
        kind = reason.split(":", 1)[0][:60]
        if kind not in peer.logged_reasons:  # each kind of rejection logged once per peer
            peer.logged_reasons.add(kind)
            peer.log.warning("peer_penalized", points=points, reason=reason[:300])
        now, ip = trio.current_time(), ip_of(peer.remote)
        if banned := self.scoreboard.penalize(peer.node_id, points, kind, now, ip):
            self.log.warning("peer_banned", peer=peer.short_id, address=ip, reason=reason,
                             address_banned=self.scoreboard.is_address_banned(ip, now),
                             seconds=round(self.scoreboard.banned_for(peer.node_id, now), 1))
            self._drop(peer, f"banned: {reason}", code=1008)
        return banned

    def _charge_address(self, remote: str, fault: Fault) -> None:
        """A connection from ``remote`` did ``fault`` before its handshake named a node: its IP
        pays (see :mod:`.refusal`), and is banned below the threshold (``address_banned``)."""
        ip, now = ip_of(remote), trio.current_time()
        if self.scoreboard.penalize_address(ip, fault.points, fault.reason, now):
            self.log.warning("address_banned", address=ip, reason=fault.penalty_reason,
                             seconds=round(self.scoreboard.address_banned_for(ip, now), 1))

    @property
    def refused(self) -> frozenset[bytes]:
        """The node ids the operator refuses (see :meth:`set_refused`)."""
        return self._refused

    def is_refused(self, node_id: bytes) -> bool:
        """Whether connections from ``node_id`` are refused now (banned, or by the operator)."""
        return node_id in self._refused or self.scoreboard.is_banned(node_id, trio.current_time())

    def set_refused(self, node_ids: set[bytes]) -> None:
        """Refuse exactly these node ids from now on (a partition); disconnect those connected."""
        self._refused = frozenset(node_ids)
        for node_id in self._refused:
            self.disconnect(node_id, "refused by this node's operator")

    def counters(self) -> dict[str, Traffic]:
        """Traffic by message kind, totalled over every peer since the host started."""
        return self._totals.snapshot()
