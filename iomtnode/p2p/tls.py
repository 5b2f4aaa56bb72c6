"""TLS 1.3 between peers: :class:`TlsTransport`, and the channel binding its handshake signs.

Each node makes an ephemeral self-signed certificate when it starts (ECDSA P-256, signed with
SHA-256; its key lives only in this process's memory) and serves TLS 1.3 with it on its p2p
port; a node dialing one speaks TLS 1.3 as the client. No certificate is checked against a CA
or a host name: TLS gives the connection confidentiality and integrity, and the node-key
handshake (:mod:`.handshake`) gives identity. The two are tied by the channel binding: the
SHA-256 of the server's certificate (RFC 5929 ``tls-server-end-point``; SHA-256 is the hash
the certificate is signed with), which both ends of one TLS connection know and which the
handshake's signatures cover. A relay between two nodes holds a TLS connection of its own with
each and cannot show either node's certificate without its key, so the signatures it forwards
are for another binding and are refused.

TLS 1.3 only, no compression (TLS 1.3 has none), no renegotiation (TLS 1.3 has none), no
session tickets (a dial always makes a fresh session). A connection whose first byte is not a
TLS handshake record is a node of an older protocol version speaking plain websocket: it is
handed over unencrypted (no binding), so that its handshake is refused with the version
mismatch, which it understands, and never gets further.
"""

from __future__ import annotations

import datetime
import ssl
import tempfile
from pathlib import Path

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..core.challenge import ChallengeError
from ..core.challenge import tls_server_end_point as server_end_point
from .transport import ChannelError, Connection, StreamHandler, TcpTransport, Transport

TLS_HANDSHAKE_TIMEOUT_S = 3.0  # a TLS handshake, either side; inside the host's handshake time
TLS_FIRST_READ_BYTES = 4096  # read of an accepted connection's first bytes (its ClientHello)
CERTIFICATE_DAYS = 3650  # validity written in the certificate (peers do not check it)
TLS_HANDSHAKE_RECORD = 0x16  # the first byte of every TLS connection (a handshake record)
REFUSAL_BYTES = 1024  # of a dialed connection's first bytes, kept to read a refusal in clear


def make_certificate() -> tuple[bytes, bytes]:
    """A fresh self-signed ECDSA P-256 certificate: ``(certificate PEM, private key PEM)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iomtnode")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=CERTIFICATE_DAYS))
        .sign(key, hashes.SHA256())
    )
    return (certificate.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def _context(purpose: ssl._SSLMethod) -> ssl.SSLContext:
    context = ssl.SSLContext(purpose)
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_TICKET
    return context


def server_context(certificate_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """TLS 1.3 serving ``certificate_pem``; clients present no certificate."""
    context = _context(ssl.PROTOCOL_TLS_SERVER)
    context.num_tickets = 0
    # the ssl module loads a key from files only: a private directory, gone once loaded
    with tempfile.TemporaryDirectory(prefix="iomtnode-tls-") as folder:
        cert_file, key_file = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert_file.write_bytes(certificate_pem)
        key_file.touch(mode=0o600)
        key_file.write_bytes(key_pem)
        context.load_cert_chain(cert_file, key_file)
    return context


def client_context() -> ssl.SSLContext:
    """TLS 1.3 accepting any server certificate: identity is the handshake's job."""
    context = _context(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class TlsTransport:
    """TLS 1.3 over another transport's streams (TCP), with this node's ephemeral
    certificate, made at construction; see the module docstring."""

    def __init__(self, streams: Transport, *,
                 handshake_timeout_s: float = TLS_HANDSHAKE_TIMEOUT_S) -> None:
        self.streams = streams
        self.handshake_timeout_s = handshake_timeout_s
        certificate_pem, key_pem = make_certificate()
        self.binding = server_end_point(ssl.PEM_cert_to_DER_cert(certificate_pem.decode()))
        self._server = server_context(certificate_pem, key_pem)
        self._client = client_context()

    @classmethod
    def over_tcp(cls, tcp_user_timeout_ms: int | None = None) -> TlsTransport:
        """TLS over TCP sockets tuned as :class:`~.transport.TcpTransport` tunes them."""
        return cls(TcpTransport(tcp_user_timeout_ms))

    async def listen(self, host: str, port: int, handler: StreamHandler,
                     handler_nursery: trio.Nursery, *,
                     task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """As the stream transport's: the handler secures its streams with :meth:`secure`."""
        await self.streams.listen(host, port, handler, handler_nursery, task_status=task_status)

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        return await self.streams.connect(host, port)

    async def secure(self, stream: trio.abc.Stream, remote: str, *,
                     outbound: bool) -> Connection:
        """The TLS handshake on ``stream``, as the client when ``outbound``, within
        ``handshake_timeout_s``. Raises :class:`ChannelError` (failed or timed out)."""
        with trio.move_on_after(self.handshake_timeout_s):
            try:
                return await (self._dialed(stream, remote) if outbound
                              else self._accepted(stream, remote))
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                detail = str(exc.__cause__ or exc) or "connection closed"
                hint = " (a node before protocol version 4 speaks no TLS)" if outbound else ""
                raise ChannelError(f"TLS handshake failed: {detail}{hint}") from None
        raise ChannelError(f"TLS handshake timed out ({self.handshake_timeout_s} s)")

    async def _dialed(self, stream: trio.abc.Stream, remote: str) -> Connection:
        recorded = _Tapped(stream, keep=REFUSAL_BYTES)
        tls = trio.SSLStream(recorded, self._client)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError:
            refusal = http_refusal(recorded.first)
            if refusal is None:
                raise
            raise ChannelError(refusal) from None
        certificate = tls.getpeercert(binary_form=True)
        if not certificate:
            raise ChannelError("TLS handshake failed: the server presented no certificate")
        try:
            binding = server_end_point(certificate)
        except ChallengeError as exc:  # OpenSSL took it, but it cannot be read again
            raise ChannelError(f"TLS handshake failed: {exc}") from None
        return Connection(tls, binding, remote, True)

    async def _accepted(self, stream: trio.abc.Stream, remote: str) -> Connection:
        first = await stream.receive_some(TLS_FIRST_READ_BYTES)
        if not first:
            raise ChannelError("TLS handshake failed: connection closed before it began")
        replayed = _Tapped(stream, prefix=first)
        if first[0] != TLS_HANDSHAKE_RECORD:  # plain websocket: an older node; see above
            return Connection(replayed, None, remote, False)
        tls = trio.SSLStream(replayed, self._server, server_side=True)
        await tls.do_handshake()
        return Connection(tls, self.binding, remote, False)


class _Tapped(trio.abc.Stream):
    """``stream`` with ``prefix`` (bytes already read from it) read again first, keeping the
    first ``keep`` bytes received from it in ``first``."""

    def __init__(self, stream: trio.abc.Stream, *, prefix: bytes = b"", keep: int = 0) -> None:
        self._stream = stream
        self._prefix = prefix
        self._keep = keep
        self.first = b""

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        data = await self._stream.receive_some(max_bytes)
        if len(self.first) < self._keep:
            self.first += data[:self._keep - len(self.first)]
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


def http_refusal(first: bytes) -> str | None:
    """The reason of a plain HTTP refusal (a node refuses a connection over its limits before
    TLS, so as not to spend a TLS handshake on it: see ``upgrade.refuse_unread``), read from
    the first bytes the dialed node sent; None if they are not one."""
    if not first.startswith(b"HTTP/1.1 "):
        return None
    head, _, body = first.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(status) < 2 or not status[1].isdigit():
        return None
    reason = (body.strip() or (status[2] if len(status) > 2 else b"")).decode(errors="replace")
    code = status[1].decode()
    hint = " (a node before protocol version 4 speaks no TLS)" if code == "400" else ""
    return f"rejected with HTTP {code}: {reason[:200]}{hint}"
