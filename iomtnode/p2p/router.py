"""The p2p router: the transport host, discovery, and the reactors that speak on the wire.

The router knows nothing of what most messages mean. A reactor (CometBFT's word) is the part
of a service that speaks on the wire: it is registered for the message kinds it handles
(:meth:`Router.register`) and gets ``(peer, message)`` for each of them, in order, one at a
time per peer (from the peer's reader task: never a task per message; a reactor that awaits
holds up only that peer, and TCP pushes back on it), and a call when a peer connects or goes.
A kind registered twice is refused at registration. A request kind (one that makes this
node look something up and answer) is registered with its :class:`~.ratelimit.Rate`, and
each such request takes a token from its sender's bucket for the kind before it is
dispatched (:class:`~.ratelimit.RequestLimits`); one over its sender's rate is dropped and
costs the sender :data:`~.score.RATE_LIMITED` (logged once per peer as ``rate_limited``).
A kind whose delivery protects its sender from eviction (a block, transactions, a vote: see
:data:`~.slots.USEFUL_KINDS`) is declared so by its reactor at registration (``useful``), so
the router knows no message of another layer by name; such a message marks its sender when
its reactor took it without a penalty.
A message of a kind nobody registered costs its sender :data:`~.score.INVALID_MESSAGE`, as
does a handshake message after the handshake (the peer's reader refuses those before they
get here). A message from a peer already closed (its reader held the frame when the peer
was dropped) is dropped unread: nothing is made for a peer that is gone.

Reactors reach the peers through the router: :meth:`Router.peers`, :meth:`Router.get`,
:meth:`Router.broadcast`, :meth:`Router.penalize` and :meth:`Router.disconnect`.

The router's own kinds are discovery's (:class:`PeerRecords`, :class:`GetPeers`), handled by
:class:`~.pex.PeerExchange`, registered like any other reactor.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any, Protocol

import structlog
import trio

from ..config import Config, parse_hostport
from ..core.crypto import SigningKey
from ..store import BlockStore
from . import score
from .dialer import Dialer
from .discovery import AddressBook, OwnRecord, wall_clock_ms
from .handshake import make_hello
from .host import Host, P2PConfig
from .messages import MESSAGE_TYPES, GetPeers, Hello, Message, PeerRecords
from .mobility import AddressWatcher, is_wildcard, local_ip_toward
from .peer import Peer
from .pex import RATES as PEX_RATES
from .pex import PeerExchange
from .ratelimit import Rate, RequestLimits
from .slots import USEFUL_KINDS
from .stats import P2PStats, PeerStats
from .transport import Transport, format_address

log = structlog.get_logger(__name__)

Head = Callable[[], tuple[int, bytes]]  # this node's head: (height, block hash)


class Reactor(Protocol):
    """The wire side of a service (module doc)."""

    async def receive(self, peer: Peer, msg: Any) -> None:
        """A message of a kind this reactor registered, from ``peer``."""

    def connected(self, peer: Peer) -> None:
        """``peer`` was registered; its messages come after this returns. Never blocks."""

    def disconnected(self, peer: Peer) -> None:
        """``peer`` is gone (a replacement may already be there). Never blocks."""


class PeerSet(Protocol):
    """What a reactor may do with the connected peers: the router gives it this."""

    def peers(self) -> list[Peer]: ...

    def get(self, node_id: bytes) -> Peer | None: ...

    def broadcast(self, msg: Message, exclude: Container[bytes] = ()) -> int: ...

    def penalize(self, peer: Peer, points: int, reason: str) -> bool: ...

    def penalize_id(self, node_id: bytes, points: int, reason: str) -> None: ...


class KindTakenError(ValueError):
    """A message kind registered by two reactors."""


class Router:
    """Peers, discovery and the registered reactors (module doc).

    ``head()`` gives this node's head for its Hello; ``chain_id`` and ``genesis_hash``
    name the chain it is on.
    """

    def __init__(self, config: Config, key: SigningKey, store: BlockStore, chain_id: str,
                 genesis_hash: bytes, head: Head, *, rng: random.Random | None = None,
                 transport: Transport | None = None,
                 now_ms: Callable[[], int] = wall_clock_ms) -> None:
        """``transport`` gives and secures the connections (default: TLS 1.3 over TCP);
        ``now_ms`` the wall clock that stamps and ages peer records."""
        self._config = config
        self._key = key
        self._chain_id = chain_id
        self._genesis_hash = genesis_hash
        self._head = head
        self._rng = rng or random.Random()
        host, port = parse_hostport(config.p2p_listen, "p2p_listen")
        self.host = Host(
            P2PConfig(host=host, port=port, max_peers=config.max_peers,
                      outbound_slots=config.outbound_slots,
                      max_inbound_per_ip=config.max_inbound_per_ip,
                      max_inbound_per_netgroup=config.max_inbound_per_netgroup,
                      max_pending_per_ip=config.max_pending_per_ip,
                      max_pending_per_netgroup=config.max_pending_per_netgroup,
                      ban_s=config.ban_s, address_ban_s=config.address_ban_s),
            key, self, transport=transport,
        )
        self.book = AddressBook(store, chain_id, now_ms)
        self.own = OwnRecord(key, chain_id, store, now_ms)
        self.dialer = Dialer(self.host, self.book, config.bootnodes, key.public, self._rng,
                             config.outbound_slots)
        self._routes: dict[type[Any], Reactor] = {}
        self._useful: dict[type[Any], str] = {}  # kind -> what it delivers (slots.USEFUL_KINDS)
        self._reactors: list[Reactor] = []
        self.limits = RequestLimits(trio.current_time)
        self.pex = PeerExchange(self, self.book, self.own, self.dialer, key.public, chain_id,
                                self._rng, now_ms)
        self.register((PeerRecords, GetPeers), self.pex, rates=PEX_RATES)
        self.address = ""

    # reactors ------------------------------------------------------------------------------

    def register(self, kinds: Iterable[type[Any]], reactor: Reactor, *,
                 rates: Mapping[type[Any], Rate] | None = None,
                 useful: Mapping[type[Any], str] | None = None) -> None:
        """Deliver the messages of ``kinds`` to ``reactor``; tell it of peers connecting and
        going. ``rates`` gives the request kinds among them the rate each peer may send
        them at; ``useful`` the kinds among them whose delivery protects the sender from
        eviction, each with what it delivers (one of :data:`~.slots.USEFUL_KINDS`; module
        doc). Raises :class:`KindTakenError` if a kind has a reactor already, and ValueError
        for a type that is not a declared message kind, a rate or a useful kind not in
        ``kinds``, or a useful kind delivering none of :data:`~.slots.USEFUL_KINDS`."""
        kinds = list(kinds)
        rates, useful = rates or {}, useful or {}
        for kind in rates:
            if kind not in kinds:
                raise ValueError(f"a rate for {kind.__name__}, which is not registered here")
        for kind, delivers in useful.items():
            if kind not in kinds:
                raise ValueError(f"{kind.__name__} is useful but not registered here")
            if delivers not in USEFUL_KINDS:
                raise ValueError(f"{kind.__name__} delivers {delivers!r}, which is none of "
                                 f"{', '.join(USEFUL_KINDS)}")
        for kind in kinds:
            if MESSAGE_TYPES.get(kind.KIND) is not kind:
                raise ValueError(f"{kind.__name__} is not a declared message kind")
            taken = self._routes.get(kind)
            if taken is not None:
                raise KindTakenError(f"{kind.__name__} is handled by "
                                     f"{type(taken).__name__} already")
        for kind in kinds:
            self._routes[kind] = reactor
        for kind, rate in rates.items():
            self.limits.add(kind, rate)
        self._useful.update(useful)
        if reactor not in self._reactors:
            self._reactors.append(reactor)

    # what reactors use ---------------------------------------------------------------------

    def peers(self) -> list[Peer]:
        """The connected peers."""
        return self.host.peers()

    def get(self, node_id: bytes) -> Peer | None:
        """The peer ``node_id`` if connected."""
        return self.host.get(node_id)

    def broadcast(self, msg: Message, exclude: Container[bytes] = ()) -> int:
        """Queue ``msg``, encoded once, to every peer not in ``exclude``; never waits."""
        return self.host.broadcast(msg, exclude)

    def penalize(self, peer: Peer, points: int, reason: str) -> bool:
        """Charge ``peer`` for ``reason``; True if that banned it (see :class:`~.host.Host`)."""
        return self.host.penalize(peer, points, reason)

    def penalize_id(self, node_id: bytes, points: int, reason: str) -> None:
        """Charge the peer ``node_id`` for ``reason``, if still connected."""
        peer = self.host.get(node_id)
        if peer is not None:
            self.host.penalize(peer, points, reason)

    def disconnect(self, node_id: bytes, reason: str) -> bool:
        """Close the connection to ``node_id``; False if not connected."""
        return self.host.disconnect(node_id, reason)

    # the handler the host calls ------------------------------------------------------------

    def local_hello(self) -> Hello:
        height, head_hash = self._head()
        return make_hello(self._key, self._chain_id, self._genesis_hash, height, head_hash)

    def local_record(self) -> bytes:
        return self.own.raw

    async def on_connected(self, peer: Peer) -> None:
        for reactor in self._reactors:
            reactor.connected(peer)

    def on_disconnected(self, peer: Peer, reason: str) -> None:
        self.limits.forget(peer)
        for reactor in self._reactors:
            reactor.disconnected(peer)
        self.dialer.wake()

    async def on_message(self, peer: Peer, msg: Message) -> None:
        if peer.closed:  # gone, or going: its buckets are (or are about to be) forgotten, and
            return  # a bucket made now would keep the peer in memory for good
        kind = type(msg)
        reactor = self._routes.get(kind)
        if reactor is None:
            self.host.penalize(peer, score.INVALID_MESSAGE, f"unexpected {kind.__name__}")
        elif (over := self.limits.charge(peer, kind)) is not None:
            self.host.penalize(peer, score.RATE_LIMITED,
                               f"rate_limited: {kind.__name__} dropped, over {over.per_s:g}/s "
                               f"(burst {over.burst:g})")
        elif (useful := self._useful.get(kind)) is None:
            await reactor.receive(peer, msg)
        else:  # a kind that protects its sender from eviction, unless it cost a penalty
            scores = self.host.scoreboard
            before = scores.last_penalty(peer.node_id)  # a dict lookup: no clock, no decay
            await reactor.receive(peer, msg)
            if scores.last_penalty(peer.node_id) is before:  # stamped when it arrived
                peer.useful_at[useful] = peer.last_received_at

    # moving ------------------------------------------------------------------------------

    def stats(self) -> P2PStats:
        """The router's figures now."""
        board, now = self.host.scoreboard, trio.current_time()
        return P2PStats(
            self.address,
            tuple(PeerStats(p.node_id, p.remote, p.outbound, p.observed_address)
                  for p in self.host.peers()),
            self.host.refused, self.host.counters(), board.bans_issued, len(board.bans(now)),
            len(board.address_bans(now)), dict(board.penalties))

    async def move(self, address: str) -> str:
        """Listen on ``address`` instead (the node moved); re-announce; re-dial everyone."""
        host, port = parse_hostport(address, "address")
        bound = await self.host.rebind(host, port)
        # an operator's advertised address stays what peers dial (a NAT or a proxy maps it)
        self.address = self._config.advertise_address or format_address(host, bound)
        self.pex.announce(self.own.publish(self.address).raw)
        self.dialer.reset_all()
        return self.address

    def _probe_local_ip(self) -> str | None:
        """The local address toward a known peer (IP literals only: no DNS here)."""
        hosts = [p.remote.rsplit(":", 1)[0] for p in self.host.peers()]
        hosts += [b.rsplit(":", 1)[0] for b in self._config.bootnodes]
        for host in hosts:
            host = host.strip("[]")
            if host.replace(".", "").isdigit() or ":" in host:
                ip = local_ip_toward(host)
                if ip is not None:
                    return ip
        return None

    async def address_changed(self, ip: str) -> None:
        """This node's routable address changed: re-announce and re-dial from the new one."""
        port = self.host.listen_port
        self.address = format_address(ip, port)
        record = self.own.publish(self.address)
        for peer in self.host.peers():  # connections made from the old address are dead
            self.host.disconnect(peer.node_id, "local address changed")
        log.info("p2p_address_changed", address=self.address, seq=record.seq)
        self.dialer.reset_all()

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Listen, publish our record, exchange records and dial until cancelled.

        Reports the address this node advertises (``host:port``): ``advertise_address`` if
        set (a DNS name stays a name in the record: every dial resolves it again), else the
        address the p2p listener is bound to, its routable IP for a wildcard listener.
        """
        async with trio.open_nursery() as nursery:
            port = await nursery.start(self.host.run)
            host, _ = parse_hostport(self._config.p2p_listen)
            if self._config.advertise_address:  # the operator's: no probe, nothing to follow
                self.address = self._config.advertise_address
            else:
                if is_wildcard(host):  # advertise the routable address, and follow it
                    ip = self._probe_local_ip()
                    if ip is None:
                        ip = "127.0.0.1"
                        log.warning("p2p_address_unknown", listen=self._config.p2p_listen,
                                    advertised=ip, reason="no peer known yet to route toward")
                    watcher = AddressWatcher(self._probe_local_ip, self.address_changed, ip)
                    nursery.start_soon(watcher.run)
                    host = ip
                self.address = format_address(host, port)  # [v6]:port
            self.own.publish(self.address)
            await nursery.start(self.dialer.run)
            nursery.start_soon(self.pex.run)
            task_status.started(self.address)

