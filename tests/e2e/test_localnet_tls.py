"""A localnet whose nodes serve their API over TLS (``api_tls_cert`` / ``api_tls_key`` in
their config.toml): started, watched, checked and loaded over ``wss://``, each node's own
certificate trusted; a certificate that does not name the node's address stops the start at
once, naming the certificate."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio

from iomtnode.config import load_config, render
from iomtnode.home import Home
from iomtnode.localnet import Localnet, Manifest, prepare
from iomtnode.localnet.procs import RECORD_NAME
from iomtnode.localnet.rpc import NodeTlsError
from iomtnode.service import single_exception
from tests.api.certs import make_cert

pytestmark = [pytest.mark.e2e]
FAST = {"IOMTNODE_EMPTY_BLOCK_INTERVAL_S": "0.5"}


def with_api_tls(directory: Path, nodes: int, *, host: str = "127.0.0.1") -> Path:
    """A localnet of ``nodes`` (one authority) whose every API speaks TLS with a certificate
    of its own for ``host``."""
    manifest = prepare(directory, nodes, authorities=1, base_port=None)
    for entry in manifest.nodes:
        files = make_cert(entry.home / "tls", host=host)
        path = Home(entry.home).config_path
        config = load_config(path, env={})
        path.write_text(render(dataclasses.replace(
            config, api_tls_cert=str(files.cert.relative_to(entry.home)),
            api_tls_key=str(files.key.relative_to(entry.home)))))
    return directory


@pytest.mark.timeout(120)
async def test_a_localnet_of_tls_apis_starts_answers_and_loads(tmp_path: Path):
    directory = with_api_tls(tmp_path / "net", 2)
    with trio.fail_after(90):
        async with Localnet.start(path=directory, devices=2, rate=20.0, env=FAST) as net:
            on_disk = Manifest.load(directory)
            for entry in on_disk.nodes:
                assert entry.api.startswith("wss://127.0.0.1:")
                assert entry.api_ca == entry.home / "tls" / "api.crt"
            await net.wait_for_height(2, timeout_s=30)
            report = await net.check_invariants(k=2, within_s=20)
            assert set(report["heights"]) == {"node1", "node2"}
            async with Localnet.attach(directory) as other:  # `localnet status`, `chaos`
                rows = await other.snapshot()
            assert [r["status"]["chain_id"] for r in rows] == ["iomt-localnet"] * 2
            record = directory / RECORD_NAME
            while not record.exists() or not record.read_text().strip():  # noqa: ASYNC110
                await trio.sleep(0.2)  # the simulator, over wss://, had readings accepted


@pytest.mark.timeout(60)
async def test_a_certificate_that_does_not_name_the_address_stops_the_start_at_once(
        tmp_path: Path):
    directory = with_api_tls(tmp_path / "net", 1, host="127.0.0.2")
    with trio.fail_after(20), pytest.raises(BaseException) as raised:  # not the 30 s wait
        async with Localnet.start(path=directory, env=FAST):
            pass
    error = single_exception(raised.value)  # from the nursery that starts the nodes
    assert isinstance(error, NodeTlsError)
    message = str(error)
    assert str(directory / "node1" / "tls" / "api.crt") in message
    assert "IP:127.0.0.1" in message and "does not verify" in message
