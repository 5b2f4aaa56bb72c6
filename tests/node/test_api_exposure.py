"""A node whose API listens beyond loopback without TLS says so when it starts: its clients'
data and the operator's admin token would cross the network in clear (docs/security.md).

On the in-memory network: the warning reads the configured address, and no socket is opened
on every interface of the machine running the tests."""

from __future__ import annotations

import dataclasses

import pytest
from structlog.testing import capture_logs

from .harness import BASE, Net

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(("api_listen", "warned"), [
    ("0.0.0.0:0", True),
    ("127.0.0.1:0", False),
    ("[::1]:0", False),
    ("localhost:0", False),
])
async def test_an_api_beyond_loopback_without_tls_is_warned_of(tmp_path, nursery,
                                                               autojump_clock, api_listen,
                                                               warned):
    net = Net(tmp_path, 1, config=dataclasses.replace(BASE, api_listen=api_listen))
    with capture_logs() as logs:
        await net.start(nursery, 0)  # returns once the node serves: its warnings are out
    found = [e for e in logs if e["event"] == "api_not_encrypted"]
    assert bool(found) == warned
    if warned:
        assert found[0]["log_level"] == "warning"
        assert "api_tls_cert" in found[0]["fix"]
