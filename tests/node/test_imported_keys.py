"""A new network whose every authority's home was made from an imported key (``iomtnode
init --key-file``, as every container and pod is): no home has a signing state, each
authority defers, and the network still finalizes, with nobody signing twice."""

from __future__ import annotations

import pytest
import trio

from iomtnode.consensus.signing import SIGNING_STATE_FILE

from .harness import start_net
from .test_bft import authorities
from .test_bft_fresh import assert_never_signed_twice, signed  # noqa: F401 (a fixture)

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("imported", [4, 2])
async def test_a_new_network_of_imported_keys_finalizes(
        tmp_path, nursery, autojump_clock, signed, imported):  # noqa: F811
    net = authorities(tmp_path)
    for home in net.homes[:imported]:
        (home.path / SIGNING_STATE_FILE).unlink()  # as init --key-file leaves it
    await start_net(net, nursery)
    with trio.fail_after(60):
        await net.wait_height(4)
    floors = [n.consensus.signing_floor for n in net.live() if n.consensus is not None]
    assert floors[imported:] == [0] * (4 - imported)  # homes with their state never defer
    assert all(f is not None for f in floors)
    assert net.same_chain()
    assert_never_signed_twice(signed)
    for n in net.live():
        assert n.consensus is not None and not n.consensus.evidence
