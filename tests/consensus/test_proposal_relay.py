"""Proposal relay (:class:`iomtnode.consensus.relay.ProposalRelay`): a proposal received
from its proposer goes to the peers not known to hold it, from the proposer's two designated
relayers after RELAY_DELAY_S, from every other node only after as long as the previous
height took here from its first proposal to its decision (at least RELAY_DELAY_S, at
most PROPOSAL_FALLBACK_MAX_S); one received
from a relayer goes on at once. Under trio's autojump clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import trio

from iomtnode.consensus.relay import (
    PROPOSAL_FALLBACK_MAX_S,
    RELAY_DELAY_S,
    HeightAuthorities,
    ProposalRelay,
)

from ..core.helpers import pub

NAMES = "ABCDEFG"
AUTHORITIES = [pub(n) for n in NAMES]
HEIGHT = 5


@dataclass(frozen=True)
class Prop:  # what the relay reads of a Proposal
    proposer: bytes
    round: int = 0
    block_hash: bytes = b"h" * 32


class Network:
    def __init__(self) -> None:
        self.sent: list[tuple[float, object, frozenset[bytes]]] = []

    def broadcast_consensus(self, msg: object, exclude: frozenset[bytes] = frozenset()) -> None:
        self.sent.append((trio.current_time(), msg, exclude))


def roles() -> tuple[bytes, bytes, bytes]:
    """A proposer, one of its designated relayers at HEIGHT and a node that is neither."""
    authorities = HeightAuthorities(HEIGHT, AUTHORITIES)
    order = authorities.order
    proposer = order[0]
    found = authorities.relayers(proposer)
    assert found is not None
    other = next(v for v in order if v != proposer and v not in found)
    return proposer, found[0], other


async def relay_time(own: bytes | None, previous_height_s: float | None,
                     max_s: float = PROPOSAL_FALLBACK_MAX_S) -> float:
    """When ``own`` relays a proposal received from its proposer at HEIGHT (seconds after
    it came), the previous height having taken ``previous_height_s`` from its proposal
    (None: the first, or no proposal came)."""
    network = Network()
    relay = ProposalRelay(network, own, fallback_max_s=max_s)  # type: ignore[arg-type]
    proposer = roles()[0]
    relay.enter(HEIGHT - 1, AUTHORITIES)
    await trio.sleep(7)  # waiting for transactions: not counted
    if previous_height_s is not None:
        relay.relay("old", Prop(proposer), AUTHORITIES[-1])  # type: ignore[arg-type]
        await trio.sleep(previous_height_s)
    relay.enter(HEIGHT, AUTHORITIES)
    network.sent.clear()
    received = trio.current_time()
    relay.relay("msg", Prop(proposer), proposer)  # type: ignore[arg-type]
    while not network.sent:
        await trio.sleep_until(relay.deadline())
        relay.tick(trio.current_time())
    [(at, msg, exclude)] = network.sent
    assert msg == "msg" and proposer in exclude
    return at - received


async def test_a_designated_relayer_relays_after_the_short_delay(autojump_clock):
    _, relayer, _ = roles()
    assert await relay_time(relayer, previous_height_s=1.5) == pytest.approx(RELAY_DELAY_S)


async def test_another_node_waits_as_long_as_the_previous_height_took(autojump_clock):
    _, _, other = roles()
    assert await relay_time(other, previous_height_s=1.5) == pytest.approx(1.5)
    assert await relay_time(other, previous_height_s=0.01) == pytest.approx(RELAY_DELAY_S)
    assert await relay_time(other, previous_height_s=None) == pytest.approx(RELAY_DELAY_S)
    assert await relay_time(other, previous_height_s=60) == pytest.approx(
        PROPOSAL_FALLBACK_MAX_S)


async def test_a_node_that_is_not_an_authority_relays_after_the_short_delay(autojump_clock):
    """It may be a sentry, the authorities' only path to each other."""
    assert await relay_time(b"o" * 32, previous_height_s=1.5) == pytest.approx(RELAY_DELAY_S)
    assert await relay_time(None, previous_height_s=1.5) == pytest.approx(RELAY_DELAY_S)


async def test_the_wait_is_at_most_the_bound_given(autojump_clock):
    """Half the round-0 propose timeout, from the driver's settings."""
    _, _, other = roles()
    assert await relay_time(other, previous_height_s=1.5, max_s=0.5) == pytest.approx(0.5)
    assert await relay_time(other, previous_height_s=60, max_s=30) == pytest.approx(
        PROPOSAL_FALLBACK_MAX_S)


async def test_a_proposal_from_a_relayer_goes_on_at_once_to_those_not_holding_it(
        autojump_clock):
    proposer, relayer, other = roles()
    network = Network()
    relay = ProposalRelay(network, other)  # type: ignore[arg-type]
    relay.enter(HEIGHT, AUTHORITIES)
    relay.holds(0, b"h" * 32, AUTHORITIES[-1])  # its prevote came
    relay.relay("msg", Prop(proposer), relayer)  # type: ignore[arg-type]
    assert network.sent == [(trio.current_time(), "msg",
                             frozenset({relayer, AUTHORITIES[-1]}))]
