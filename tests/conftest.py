"""Shared fixtures: a real node (LevelDB in tmp_path, API on a real loopback socket)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import structlog

from iomtnode.config import Config
from iomtnode.core.crypto import SigningKey
from iomtnode.home import Home, init_home
from iomtnode.node import Node, Services

FAST = Config(api_listen="127.0.0.1:0", p2p_listen="127.0.0.1:0", block_interval_s=0.02,
              empty_block_interval_s=0.5)


# Tests that make network namespaces, bridges and nftables tables run one at a time, on one
# xdist worker (``--dist loadgroup``): their names are per localnet, but the host's routes
# and the root namespace's veth ends are shared.
NETNS_TESTS = frozenset({
    "tests/bench/test_widearea.py", "tests/e2e/test_chaos.py",
    "tests/e2e/test_genesis_ceremony.py", "tests/e2e/test_netns.py",
    "tests/localnet/test_api_tls.py", "tests/localnet/test_chaosrun.py",
    "tests/localnet/test_netns.py", "tests/localnet/test_scenarios.py",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.split("::", 1)[0] in NETNS_TESTS:
            item.add_marker(pytest.mark.xdist_group("netns"))


@pytest.fixture(autouse=True)
def logs_as_found():
    """A test that runs a command in this process (``run`` sets the logs to its log_level
    setting, the main command to its --log-level) leaves structlog unconfigured again: its
    logs went to the command's captured stderr, closed once it ends."""
    yield
    structlog.reset_defaults()


@dataclass
class RunningNode:
    node: Node
    home: Home
    url: str
    services: Services

    @property
    def authority(self) -> SigningKey:
        return self.node.key

    @property
    def chain_id(self) -> str:
        return self.node.genesis.chain_id


@pytest.fixture
async def running_node(tmp_path, nursery) -> RunningNode:
    home = init_home(tmp_path / "node", chain_id="iomt-test", config=FAST)
    node = Node(home, home.load_config())
    info = await nursery.start(node.run)
    return RunningNode(node, home, f"ws://127.0.0.1:{info.api_port}/api/v1", info.services)
