"""Attacks on the client API's identities: a client that claims a patient's key without its
secret, or that replays or relays a proof made on another connection, is refused the patient's
data; the honest patient, on its own connection, is answered, and the node keeps finalizing.
A key of the client's own making, proven, does not lift its rate limit (a participant's does)."""

from __future__ import annotations

import os
from collections.abc import Awaitable
from functools import partial

import pytest
import trio
from trio_websocket import ConnectionClosed

from iomtnode.api.auth import BAD_AUTH_SIGNATURE, FORBIDDEN, MAX_AUTH_FAILURES
from iomtnode.api.tls import server_context
from iomtnode.client import ApiClient, ApiError, client_context, open_client
from iomtnode.config import Config
from iomtnode.core.challenge import challenge_digest
from iomtnode.core.crypto import Domain, SigningKey
from iomtnode.home import init_home
from iomtnode.node import Node

from ..api.certs import CertFiles, make_cert
from ..conftest import FAST
from ..core import sealkit as kit

pytestmark = pytest.mark.timeout(60)


async def refused(code: int, call: Awaitable[object]) -> None:
    with pytest.raises(ApiError) as info:
        await call
    assert info.value.code == code, info.value.message


async def admit(url: str, authority: SigningKey, chain_id: str, ca: CertFiles | None = None
                ) -> tuple[SigningKey, SigningKey]:
    """A device admitted to a patient's stream, committed; returns (device, stream key): the
    stream key is the patient's identity on the ledger and at the API."""
    device, stream = SigningKey.generate(), SigningKey.generate()
    tx = kit.admit(authority, device.public, stream.public, chain_id)
    async with open_client(url, ca=None if ca is None else ca.cert) as client:
        await client.call("submit_tx", tx=tx.raw.hex())
        with trio.fail_after(10):
            while True:
                if (await client.call("get_tx_status", id=tx.id.hex()))["state"] == "committed":
                    break
                await trio.sleep(0.02)
    return device, stream


async def keeps_finalizing(client: ApiClient) -> None:
    start = (await client.call("status"))["finalized_height"]
    with trio.fail_after(10):
        while True:
            if (await client.call("status"))["finalized_height"] > start:
                return
            await trio.sleep(0.05)


async def test_a_client_claiming_a_patients_key_without_its_secret_is_refused(running_node):
    rn = running_node
    device, stream = await admit(rn.url, rn.authority, rn.chain_id)
    attacker = SigningKey.generate()
    async with open_client(rn.url) as mallory, open_client(rn.url) as honest:
        await refused(FORBIDDEN, mallory.call("get_device", id=device.public.hex()))
        # claims the patient's key: signs the challenge with its own key, or sends noise
        for signature in (lambda n: attacker.sign(Domain.API_AUTH, rn.chain_id,
                                                  challenge_digest(n, b"")),
                          lambda n: os.urandom(64)):
            nonce = bytes.fromhex((await mallory.call("auth_challenge"))["nonce"])
            await refused(BAD_AUTH_SIGNATURE, mallory.call(
                "authenticate", public_key=stream.public.hex(), signature=signature(nonce).hex()))
        # proving a key of its own gets it nothing of the patient's
        assert await mallory.authenticate(attacker) == [attacker.public.hex()]
        await refused(FORBIDDEN, mallory.call("get_device", id=device.public.hex()))
        # the patient, on its own connection, is answered
        await honest.authenticate(stream)
        found = await honest.call("get_device", id=device.public.hex())
        assert found["stream"] == stream.public.hex()
        await keeps_finalizing(honest)


async def test_a_challenge_signed_for_another_connection_is_refused(running_node):
    rn = running_node
    device, stream = await admit(rn.url, rn.authority, rn.chain_id)
    async with open_client(rn.url) as honest, open_client(rn.url) as mallory:
        # the patient answers its own connection's challenge; mallory captures the answer
        nonce = bytes.fromhex((await honest.call("auth_challenge"))["nonce"])
        captured = stream.sign(Domain.API_AUTH, rn.chain_id, challenge_digest(nonce, b""))
        await mallory.call("auth_challenge")
        await refused(BAD_AUTH_SIGNATURE, mallory.call(
            "authenticate", public_key=stream.public.hex(), signature=captured.hex()))
        await refused(FORBIDDEN, mallory.call("get_device", id=device.public.hex()))
        # the answer still proves the key where it was made
        await honest.call("authenticate", public_key=stream.public.hex(),
                          signature=captured.hex())
        assert (await honest.call("get_device", id=device.public.hex()))["id"] == \
            device.public.hex()
        # and once used it proves nothing more there either
        await mallory.call("auth_challenge")
        await refused(BAD_AUTH_SIGNATURE, mallory.call(
            "authenticate", public_key=stream.public.hex(), signature=captured.hex()))
        await keeps_finalizing(honest)


async def _pipe(source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
    try:
        async for chunk in source:
            await sink.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def test_a_tls_relay_cannot_pass_on_a_patients_proof(tmp_path, nursery):
    """Mallory holds a certificate the patient's client trusts and relays its connection to the
    node: it can read the traffic, but the patient's proof covers mallory's certificate, not
    the node's, so the node does not take it."""
    config = Config(**{**{f: getattr(FAST, f) for f in FAST.__dataclass_fields__},
                       "api_tls_cert": "api.crt", "api_tls_key": "api.key"})
    home = init_home(tmp_path / "node", chain_id="iomt-test", config=config)
    node_cert = make_cert(home.path, "api")
    node = Node(home, home.load_config())
    info = await nursery.start(node.run)
    url = f"wss://127.0.0.1:{info.api_port}/api/v1"
    device, stream = await admit(url, node.key, "iomt-test", node_cert)

    mallory_cert = make_cert(tmp_path / "mallory", "mitm")
    mallory_tls = server_context()
    mallory_tls.load_cert_chain(mallory_cert.cert, mallory_cert.key)

    async def relay(stream: trio.SocketStream) -> None:
        down = trio.SSLStream(stream, mallory_tls, server_side=True)
        up = await trio.open_ssl_over_tcp_stream("127.0.0.1", info.api_port,
                                                 ssl_context=client_context(node_cert.cert))
        async with trio.open_nursery() as pipes:
            pipes.start_soon(_pipe, down, up)
            await _pipe(up, down)
            pipes.cancel_scope.cancel()

    listeners = await nursery.start(partial(trio.serve_tcp, relay, 0, host="127.0.0.1"))
    relay_port = listeners[0].socket.getsockname()[1]
    async with open_client(f"wss://127.0.0.1:{relay_port}/api/v1", ca=mallory_cert.cert
                           ) as fooled:
        assert (await fooled.call("status"))["chain_id"] == "iomt-test"  # the relay works
        await refused(BAD_AUTH_SIGNATURE, fooled.authenticate(stream))
        await refused(FORBIDDEN, fooled.call("get_device", id=device.public.hex()))
    async with open_client(url, ca=node_cert.cert) as honest:
        await honest.authenticate(stream)
        assert (await honest.call("get_device", id=device.public.hex()))["stream"] == \
            stream.public.hex()
        await keeps_finalizing(honest)


async def test_a_client_that_keeps_guessing_is_disconnected(running_node):
    rn = running_node
    stream = SigningKey.generate()
    async with open_client(rn.url) as mallory, open_client(rn.url) as honest:
        for _ in range(MAX_AUTH_FAILURES):
            await mallory.call("auth_challenge")
            await refused(BAD_AUTH_SIGNATURE, mallory.call(
                "authenticate", public_key=stream.public.hex(), signature=os.urandom(64).hex()))
        await mallory.call("auth_challenge")
        with pytest.raises((ApiError, ConnectionError)):  # the answer, or the close, comes first
            await mallory.call("authenticate", public_key=stream.public.hex(),
                               signature=os.urandom(64).hex())
        with pytest.raises((ConnectionError, ConnectionClosed)):  # closed (1008): no more guesses
            await mallory.call("status")
        await keeps_finalizing(honest)


async def past_the_burst(client: ApiClient, burst: int, requests: int) -> float:
    """Seconds that ``requests`` cheap calls take on ``client``'s connection once ``burst``
    calls have been made."""
    for _ in range(burst):
        await client.call("auth_challenge")
    began = trio.current_time()
    for _ in range(requests):
        await client.call("auth_challenge")
    return trio.current_time() - began


async def test_a_key_of_ones_own_making_does_not_lift_the_rate_limit(tmp_path, nursery):
    config = Config(**{**{f: getattr(FAST, f) for f in FAST.__dataclass_fields__},
                       "api_requests_per_s": 1.0})
    home = init_home(tmp_path / "node", chain_id="iomt-test", config=config)
    node = Node(home, home.load_config())
    info = await nursery.start(node.run)
    url = f"ws://127.0.0.1:{info.api_port}/api/v1"
    burst = 1000  # REQUEST_BURST
    with trio.fail_after(30):
        async with open_client(url) as attacker:
            fresh = SigningKey.generate()  # anyone can make one and prove it
            assert await attacker.authenticate(fresh, "iomt-test") == [fresh.public.hex()]
            # its burst (less the two calls of the proof), then 6 more at 1/s: the tokens the
            # burst's own second or two gave back, then a second each
            assert await past_the_burst(attacker, burst - 2, 6) >= 1.5
        async with open_client(url) as authority:  # a key the ledger knows: not throttled
            result = await authority.call("auth_challenge")
            signature = node.key.sign(Domain.API_AUTH, "iomt-test", challenge_digest(
                bytes.fromhex(result["nonce"]), b""))
            proven = await authority.call("authenticate", public_key=node.key.public.hex(),
                                          signature=signature.hex())
            assert proven["participants"] == [node.key.public.hex()]
            assert await past_the_burst(authority, burst, 6) < 1.0
            await keeps_finalizing(authority)
