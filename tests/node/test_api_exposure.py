"""A node whose API listens beyond loopback without TLS says so when it starts: its clients'
data and the operator's admin token would cross the network in clear (docs/security.md)."""

from __future__ import annotations

import dataclasses

import pytest
import trio
from structlog.testing import capture_logs

from iomtnode.home import init_home
from iomtnode.node import Node

from ..conftest import FAST

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(("api_listen", "warned"), [
    ("0.0.0.0:0", True),
    ("127.0.0.1:0", False),
    ("[::1]:0", False),
    ("localhost:0", False),
])
async def test_an_api_beyond_loopback_without_tls_is_warned_of(tmp_path, api_listen, warned):
    config = dataclasses.replace(FAST, api_listen=api_listen)
    home = init_home(tmp_path / "node", chain_id="iomt-test", config=config)
    with capture_logs() as logs, trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(Node(home, home.load_config()).run)
            nursery.cancel_scope.cancel()
    found = [e for e in logs if e["event"] == "api_not_encrypted"]
    assert bool(found) == warned
    if warned:
        assert found[0]["log_level"] == "warning"
        assert "api_tls_cert" in found[0]["fix"]
