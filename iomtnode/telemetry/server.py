"""The Prometheus endpoint: ``GET /metrics`` over HTTP/1.1 on the node's own trio loop.

A small server on h11 (the HTTP/1.1 protocol, no I/O) in the node's nursery, rather than
prometheus-client's server, whose thread would read the node's figures while trio changes
them: here a scrape is generated on the trio thread, between two steps of the node, so the
figures it shows are of one moment. Every other request is answered 404.

Resource handling: at most ``max_connections`` connections at once, and at most
``max_connections_per_ip`` of them from one IP address (one IPv6 /64: a host is commonly
given a whole /64), so that one client holding idle connections cannot keep Prometheus out
(more are closed as soon as they are accepted, nothing read); one request per connection
(the answer says ``Connection: close``); the request's head must arrive within
``read_deadline_s`` of the accept (a connection that sends nothing is closed then) and be
at most ``max_head_bytes``; the answer must be taken within ``write_deadline_s``;
expositions are generated at most once per ``min_interval_s`` (a scrape that comes sooner
waits for its turn, holding its connection), so scrapers cost the node a bounded share of
its time however often they ask.

Error handling: a request that is not HTTP/1.1, too large or too slow is answered (400,
431) or closed, and logged (``metrics_request_refused``) with the reason; the node carries
on. A scraper that goes away mid-answer is logged at debug.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11
import structlog
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from ..api.connection import address_key
from ..p2p.transport import TcpTransport, ip_of

log = structlog.get_logger(__name__)


METRICS_PATH = b"/metrics"
MAX_CONNECTIONS = 8  # scrapers connected at once; more are closed when accepted
# connections at once from one IP address (a Prometheus, or an HA pair behind one address,
# and a person's curl); more from it are closed when accepted, so that one client holding
# idle connections fills at most this many of MAX_CONNECTIONS
MAX_CONNECTIONS_PER_IP = 2
MAX_HEAD_BYTES = 8 * 1024  # a request's line and headers (a scraper's are ~300 bytes)
READ_DEADLINE_S = 5.0  # for the whole request head, from the accept (an idle one: closed)
WRITE_DEADLINE_S = 10.0  # for the whole answer (~20 KB), once generated
# Expositions at most this often (about 1 ms of the trio thread each: at most ~1% of it); a
# Prometheus scrapes every 15 s, so only a misbehaving scraper ever waits.
MIN_INTERVAL_S = 0.1
RECEIVE_BYTES = 4096  # read from a socket at once
# After a refusal the rest of the request is read and thrown away, up to this many bytes or
# for this long, before the socket is closed: closed with unread bytes, the scraper's kernel
# would get a reset and might drop the refusal before its reader saw it.
LINGER_BYTES = 64 * 1024
LINGER_S = 1.0


@dataclass(frozen=True, slots=True)
class MetricsServerConfig:
    """Where the endpoint listens, and its limits (see the module doc)."""

    host: str
    port: int  # 0: the OS picks one; ``run`` reports it
    max_connections: int = MAX_CONNECTIONS
    max_connections_per_ip: int = MAX_CONNECTIONS_PER_IP
    max_head_bytes: int = MAX_HEAD_BYTES
    read_deadline_s: float = READ_DEADLINE_S
    write_deadline_s: float = WRITE_DEADLINE_S
    min_interval_s: float = MIN_INTERVAL_S


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: status, content type, body."""

    status: int
    content_type: bytes
    body: bytes


NOT_FOUND = Answer(404, b"text/plain; charset=utf-8", b"not found: GET /metrics\n")


def route(method: bytes, target: bytes) -> bool:
    """Whether a request is the one this server answers: ``GET /metrics`` (any query)."""
    return method == b"GET" and target.split(b"?", 1)[0] == METRICS_PATH


class MetricsServer:
    """Serves ``registry`` at ``GET /metrics``; see the module doc."""

    def __init__(self, config: MetricsServerConfig, registry: CollectorRegistry) -> None:
        self.config = config
        self.registry = registry  # what it serves (tools and tests read it too)
        self._transport = TcpTransport()
        self._open = 0  # connections now
        self._open_by_ip: dict[str, int] = {}  # connections now of each IP that has any
        self._next_at = 0.0  # the earliest trio time of the next exposition

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, call ``task_status.started(port)`` with the port bound, serve until
        cancelled. Never returns unless cancelled.

        Error handling: an OSError binding (the address is in use, not local) propagates
        before ``started``, so the node does not start without the endpoint it was asked for.
        """
        cfg = self.config
        async with trio.open_nursery() as nursery:
            port = await nursery.start(self._transport.listen, cfg.host, cfg.port, self._accept,
                                       nursery)
            host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host  # IPv6, as configured
            log.info("metrics_listening", address=f"{host}:{port}",
                     path=METRICS_PATH.decode())
            task_status.started(port)

    async def _accept(self, stream: trio.abc.Stream, remote: str) -> None:
        cfg = self.config
        ip = address_key(ip_of(remote))  # an IPv6 client by its /64, as the API counts
        try:
            if self._open >= cfg.max_connections:
                log.info("metrics_request_refused", remote=remote,
                         reason="max_connections reached", max=cfg.max_connections)
                return
            if self._open_by_ip.get(ip, 0) >= cfg.max_connections_per_ip:
                log.info("metrics_request_refused", remote=remote,
                         reason="max_connections_per_ip reached",
                         max=cfg.max_connections_per_ip)
                return
            self._open += 1
            self._open_by_ip[ip] = self._open_by_ip.get(ip, 0) + 1
            try:
                await self._serve(stream, remote)
            finally:
                self._open -= 1
                self._open_by_ip[ip] -= 1
                if not self._open_by_ip[ip]:
                    del self._open_by_ip[ip]
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve(self, stream: trio.abc.Stream, remote: str) -> None:
        cfg = self.config
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=cfg.max_head_bytes)
        request: h11.Request | None = None
        refusal: Answer | None = None
        with trio.move_on_after(cfg.read_deadline_s) as reading:
            try:
                request = await _read_request(conn, stream, cfg.max_head_bytes)
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                log.info("metrics_request_refused", remote=remote, status=status,
                         reason=str(exc))
                refusal = Answer(status, b"text/plain; charset=utf-8",
                                 f"{status} bad request: {exc}\n".encode())
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.debug("metrics_request_lost", remote=remote, reason=str(exc))
                return
        if reading.cancelled_caught:
            log.info("metrics_request_refused", remote=remote,
                     reason=f"no complete request within {cfg.read_deadline_s} s")
            return
        if request is None and refusal is None:
            log.debug("metrics_request_lost", remote=remote, reason="closed before a request")
            return
        answer = refusal or await self._answer(request)
        head_only = request is not None and request.method == b"HEAD"  # HTTP: no body then
        with trio.move_on_after(cfg.write_deadline_s) as scope:
            try:
                await _send(conn, stream, answer, head_only=head_only)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.debug("metrics_answer_lost", remote=remote, reason=str(exc))
        if scope.cancelled_caught:
            log.info("metrics_answer_abandoned", remote=remote,
                     reason=f"not taken within {cfg.write_deadline_s} s")
        elif refusal is not None:
            await _linger(stream)

    async def _answer(self, request: h11.Request | None) -> Answer:
        if request is None or not route(request.method, request.target):
            return NOT_FOUND
        now = trio.current_time()
        at = max(now, self._next_at)
        self._next_at = at + self.config.min_interval_s
        await trio.sleep_until(at)
        return Answer(200, CONTENT_TYPE_PLAIN_0_0_4.encode(), generate_latest(self.registry))


async def _read_request(conn: h11.Connection, stream: trio.abc.Stream, max_head_bytes: int
                        ) -> h11.Request | None:
    """The request's head (its body, if any, is not read); None if the client closed first.
    Raises h11.RemoteProtocolError on a malformed head, or with status 431 when the first
    ``max_head_bytes`` bytes do not hold the whole head (nothing more is read then)."""
    received = 0
    while True:
        event = conn.next_event()
        if received > max_head_bytes:
            raise h11.RemoteProtocolError(f"request head over {max_head_bytes} bytes",
                                          error_status_hint=431)
        if event is h11.NEED_DATA:
            data = await stream.receive_some(min(RECEIVE_BYTES, max_head_bytes + 1 - received))
            received += len(data)
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            return event
        else:  # ConnectionClosed: the client left before a whole request
            return None


async def _linger(stream: trio.abc.Stream) -> None:
    """Read and drop what the client still sends (up to LINGER_BYTES, for LINGER_S), so
    that the answer reaches it before the close; our end is closed for writing first (the
    client sees the answer end, and closes)."""
    with trio.move_on_after(LINGER_S):
        try:
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            left = LINGER_BYTES
            while left > 0 and (data := await stream.receive_some(min(RECEIVE_BYTES, left))):
                left -= len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


async def _send(conn: h11.Connection, stream: trio.abc.Stream, answer: Answer, *,
                head_only: bool) -> None:
    headers = [(b"content-type", answer.content_type),
               (b"content-length", str(len(answer.body)).encode()), (b"connection", b"close")]
    parts = (conn.send(h11.Response(status_code=answer.status, headers=headers)),
             None if head_only else conn.send(h11.Data(data=answer.body)),
             conn.send(h11.EndOfMessage()))
    await stream.send_all(b"".join(part for part in parts if part is not None))
