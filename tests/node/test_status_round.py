"""``status`` says which round of the next height this node's consensus is deciding, so a
script (the chaos runner's kill-proposer) can tell the proposer: authorities[(height + 1 +
round) mod N]."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from iomtnode.api.methods import ClientApi

from .harness import FAST, Net

pytestmark = pytest.mark.timeout(60)


@dataclass
class Machine:
    height: int
    round: int


@dataclass
class Consensus:  # what status reads of the driver
    machine: Machine | None
    evidence: list = field(default_factory=list)


async def test_status_reports_the_round_being_decided_at_the_next_height(tmp_path, nursery,
                                                                         autojump_clock):
    node = await Net(tmp_path, 1, params=FAST).start(nursery, 0)
    api = ClientApi(node)
    running = node.consensus
    assert running is not None
    assert node.chain is not None
    try:  # status runs without a checkpoint: the head cannot move between these lines
        node.consensus = Consensus(Machine(node.chain.height + 1, 3))  # type: ignore[assignment]
        assert (await api.status())["round"] == 3
        node.consensus = Consensus(Machine(node.chain.height, 5))  # type: ignore[assignment]
        assert (await api.status())["round"] == 0  # a round of another height: not this one
        node.consensus = Consensus(None)  # type: ignore[assignment]
        assert (await api.status())["round"] == 0  # following only
    finally:
        node.consensus = running
