"""The client API's optional TLS: the server's context, read once at start, and its binding.

With ``api_tls_cert`` and ``api_tls_key`` set the API speaks ``wss://`` (TLS 1.3 and nothing
older). The certificate's ``tls-server-end-point`` channel binding (RFC 5929) is what a client's
signed challenge covers (:mod:`iomtnode.core.challenge`), so a proof made through a relay that
shows the client another certificate does not verify here.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass
from pathlib import Path

import structlog
import trio

from ..config import ConfigError
from ..core.challenge import ChallengeError, tls_server_end_point

log = structlog.get_logger(__name__)

PLAIN_HTTP_BODY = b"this API speaks TLS: use a wss:// URL\n"
PLAIN_HTTP_ANSWER = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                     % (len(PLAIN_HTTP_BODY), PLAIN_HTTP_BODY))  # to a plain ws:// client


class ApiTlsError(ConfigError):
    """The API's certificate or key cannot be used (names the file and what is wrong)."""


@dataclass(frozen=True, slots=True)
class ApiTls:
    """A server-side TLS 1.3 context and the channel binding of its certificate."""

    context: ssl.SSLContext
    binding: bytes


def server_context() -> ssl.SSLContext:
    """A server context that speaks TLS 1.3 only, with no certificate loaded yet."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def load_api_tls(cert: Path, key: Path) -> ApiTls:
    """The API's TLS from a PEM certificate chain (the server's certificate first) and its PEM
    private key; :class:`ApiTlsError` naming the file if either cannot be read or they do not
    match."""
    for name, path in (("api_tls_cert", cert), ("api_tls_key", key)):
        if not path.is_file():
            raise ApiTlsError(f"{name}: {path} is not a readable file")
    try:
        pem = cert.read_text("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiTlsError(f"api_tls_cert: cannot read {cert}: {exc}") from None
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = pem.find(begin)
    stop = pem.find(end, start)
    if start < 0 or stop < 0:
        raise ApiTlsError(f"api_tls_cert: {cert} holds no PEM certificate")
    try:
        binding = tls_server_end_point(ssl.PEM_cert_to_DER_cert(pem[start:stop + len(end)]))
    except (ValueError, ChallengeError) as exc:
        raise ApiTlsError(f"api_tls_cert: {cert} is not a valid certificate: {exc}") from None
    context = server_context()
    try:
        context.load_cert_chain(cert, key)
    except OSError as exc:  # ssl.SSLError too: a key that is not PEM or does not match
        raise ApiTlsError(f"api_tls_cert/api_tls_key: cannot load {cert} with {key}: "
                          f"{exc.strerror or exc}") from None
    return ApiTls(context, binding)


async def tls_handshake(stream: trio.abc.Stream, tls: ApiTls, remote: str
                        ) -> trio.SSLStream[trio.abc.Stream] | None:
    """``stream`` under TLS once the handshake is done; None (logged) if the client failed it
    (not TLS, a version before 1.3, or it left). A plain HTTP request (a ``ws://`` URL) is
    answered 400 with the reason, in clear, so the client says so at once instead of waiting
    out its timeout for an answer. The caller bounds the time it may take."""
    secure = trio.SSLStream(stream, tls.context, server_side=True)
    try:
        await secure.do_handshake()
    except trio.BrokenResourceError as exc:
        log.info("api_tls_handshake_failed", remote=remote, reason=str(exc.__cause__ or exc))
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError) and cause.reason == "HTTP_REQUEST":
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(PLAIN_HTTP_ANSWER)
        return None
    return secure
