"""The API over TLS, on a real socket: a node with ``api_tls_cert``/``api_tls_key`` speaks wss://
(TLS 1.3 only), clients verify its certificate (against ``--api-ca`` for a self-signed one,
never silently not at all), and key proofs cover the certificate the client saw."""

from __future__ import annotations

import contextlib
import hashlib
import ssl
import sys
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionRejected

from iomtnode.api.auth import FORBIDDEN
from iomtnode.api.tls import ApiTlsError, load_api_tls
from iomtnode.client import ApiError, ClientSetupError, client_context, open_client
from iomtnode.config import Config, ConfigError
from iomtnode.core.crypto import SigningKey
from iomtnode.home import Home, init_home
from iomtnode.node import Node
from iomtnode.service import single_exception

from ..conftest import FAST
from ..core import sealkit as kit
from .certs import CertFiles, make_cert

pytestmark = pytest.mark.timeout(60)
TLS = Config(**{**{f: getattr(FAST, f) for f in FAST.__dataclass_fields__},
                "api_tls_cert": "api.crt", "api_tls_key": "tls/api.key"})


class TlsNode:
    def __init__(self, node: Node, home: Home, port: int, cert: CertFiles) -> None:
        self.node, self.home, self.cert = node, home, cert
        self.url = f"wss://127.0.0.1:{port}/api/v1"
        self.plain_url = f"ws://127.0.0.1:{port}/api/v1"


@pytest.fixture
async def tls_node(tmp_path, nursery) -> TlsNode:
    home = init_home(tmp_path / "node", chain_id="iomt-test", config=TLS)
    cert = make_cert(home.path / "tls")  # the key where the config says, relative to the home
    (home.path / "tls" / "api.crt").rename(home.path / "api.crt")
    cert = CertFiles(home.path / "api.crt", cert.key, cert.der)
    node = Node(home, home.load_config())
    info = await nursery.start(node.run)
    return TlsNode(node, home, info.api_port, cert)


async def test_a_client_that_trusts_the_certificate_speaks_wss(tls_node):
    async with open_client(tls_node.url, ca=tls_node.cert.cert) as client:
        assert (await client.call("status"))["chain_id"] == "iomt-test"
        assert client.binding == hashlib.sha256(tls_node.cert.der).digest()
        assert (await client.call("auth_challenge"))["binding"] == "tls-server-end-point"


async def test_a_key_proven_over_tls_reads_its_device(tls_node):
    authority = tls_node.node.key
    device, stream = SigningKey.generate(), SigningKey.generate()
    tx = kit.admit(authority, device.public, stream.public, "iomt-test")
    async with open_client(tls_node.url, ca=tls_node.cert.cert) as client:
        await client.call("submit_tx", tx=tx.raw.hex())
        with pytest.raises(ApiError) as info:
            await client.call("get_device", id=device.public.hex())
        assert info.value.code == FORBIDDEN
        assert await client.authenticate(stream) == [stream.public.hex()]
        with trio.fail_after(10):  # until the admission commits, S is no party to D
            while True:
                if (await client.call("get_tx_status", id=tx.id.hex()))["state"] == "committed":
                    break
                await trio.sleep(0.02)
        found = await client.call("get_device", id=device.public.hex())
        assert found["stream"] == stream.public.hex()


async def test_a_client_never_skips_verifying_the_certificate(tls_node):
    with pytest.raises(trio.BrokenResourceError) as info:
        async with open_client(tls_node.url):  # the system's roots do not hold a test cert
            pass
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    with pytest.raises(ClientSetupError):
        async with open_client(tls_node.plain_url, ca=tls_node.cert.cert):
            pass
    with pytest.raises(ClientSetupError):
        client_context(tls_node.home.path / "no-such.pem")


async def test_plain_websocket_and_old_tls_are_refused_and_the_node_goes_on(tls_node):
    port = int(tls_node.url.split(":")[2].split("/")[0])
    with trio.fail_after(5):  # a plain websocket upgrade is no TLS handshake: closed at once
        plain = await trio.open_tcp_stream("127.0.0.1", port)
        await plain.send_all(b"GET /api/v1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="
                             b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        with contextlib.suppress(trio.BrokenResourceError):  # closed, or reset
            while await plain.receive_some():  # at most a TLS alert, then the end
                pass
    old = ssl.create_default_context(cafile=str(tls_node.cert.cert))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with trio.fail_after(10):
        stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=old)
        with pytest.raises(trio.BrokenResourceError):
            await stream.do_handshake()
    async with open_client(tls_node.url, ca=tls_node.cert.cert) as client:
        assert (await client.call("status"))["chain_id"] == "iomt-test"


async def test_a_ws_url_to_a_tls_api_is_told_to_use_wss_at_once(tls_node):
    # the client waited out its 10 s connect timeout ("the node did not answer in time"):
    # the node closed the connection, which the websocket handshake does not notice
    with trio.fail_after(3):
        try:
            async with open_client(tls_node.plain_url):
                raise AssertionError("a plain websocket was served")
        except BaseException as raised:  # the client's nursery wraps it in a group
            rejected = single_exception(raised)
    assert isinstance(rejected, ConnectionRejected) and rejected.status_code == 400
    assert rejected.body == b"this API speaks TLS: use a wss:// URL\n"
    with trio.fail_after(30):
        done = await trio.run_process(
            [sys.executable, "-m", "iomtnode", "status", "--api", tls_node.plain_url],
            capture_stdout=True, capture_stderr=True, check=False)
    assert (done.returncode, done.stderr) == (
        1, b"error: the node refused the connection: HTTP 400: this API speaks TLS: use a "
           b"wss:// URL\n")


async def test_the_cli_speaks_wss_and_proves_the_authority_key(tls_node):
    device = SigningKey.generate()
    command = [sys.executable, "-m", "iomtnode", "--log-level", "error", "device", "show",
               device.public.hex(), "--home", str(tls_node.home.path), "--api", tls_node.url,
               "--api-ca", str(tls_node.cert.cert), "--json"]
    with trio.fail_after(30):
        done = await trio.run_process(command, capture_stdout=True, capture_stderr=True,
                                      check=False)
    # the authority is a party to every device: it is told this one is not registered
    assert done.returncode == 1, done.stderr
    assert b"no device with this key is registered (code 1030)" in done.stderr
    untrusted = [a for a in command if a not in ("--api-ca", str(tls_node.cert.cert))]
    with trio.fail_after(30):
        done = await trio.run_process(untrusted, capture_stdout=True, capture_stderr=True,
                                      check=False)
    assert done.returncode == 1 and b"pass --api-ca" in done.stderr, done.stderr


def test_the_two_settings_go_together():
    with pytest.raises(ConfigError, match="together"):
        Config(api_tls_cert="api.crt")
    with pytest.raises(ConfigError, match="together"):
        Config(api_tls_key="api.key")


@pytest.mark.parametrize("problem", ["missing cert", "missing key", "key is a folder",
                                     "not a certificate", "key of another certificate"])
def test_a_certificate_or_key_that_cannot_be_used_stops_the_start(tmp_path: Path, problem):
    good, other = make_cert(tmp_path / "good"), make_cert(tmp_path / "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    cert, key = {
        "missing cert": (tmp_path / "nope.crt", good.key),
        "missing key": (good.cert, tmp_path / "nope.key"),
        "key is a folder": (good.cert, tmp_path),
        "not a certificate": (garbage, good.key),
        "key of another certificate": (good.cert, other.key),
    }[problem]
    with pytest.raises(ApiTlsError) as info:
        load_api_tls(cert, key)
    assert "api_tls_" in str(info.value)
    assert isinstance(info.value, ConfigError)  # `iomtnode run` prints it and exits 2


def test_a_node_with_an_unusable_certificate_does_not_start(tmp_path):
    home = init_home(tmp_path / "node", chain_id="iomt-test", config=TLS)
    with pytest.raises(ApiTlsError, match="api_tls_cert"):
        Node(home, home.load_config())
