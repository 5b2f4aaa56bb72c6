"""The node's metrics against its services' own figures: real nodes in one process (memory
network, virtual clock), scraped through the registry the endpoint serves, each scrape
compared with the figures read in the same instant (no other task runs in between)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from iomtnode import __version__
from iomtnode.core.crypto import SigningKey
from iomtnode.telemetry import METRICS, MetricsServer

from ..core import sealkit as kit
from ..node.harness import BASE, FAST, Net, Running

pytestmark = pytest.mark.timeout(60)

CONFIG = replace(BASE, metrics_listen="127.0.0.1:0")
READINGS = 40


def exposition(node: Running) -> str:
    """What the node's endpoint would serve now."""
    server = node.services.metrics
    assert isinstance(server, MetricsServer)
    return generate_latest(server.registry).decode()


def scrape(node: Running) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample the node's endpoint would serve now: (name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(exposition(node))
            for s in family.samples}


def exposed_names(text: str) -> set[str]:
    """Every metric in an exposition, samples or not (a counter's with ``_total``)."""
    return {f"{f.name}_total" if f.type == "counter" else f.name
            for f in text_string_to_metric_families(text)}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def total(samples: dict, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


async def loaded_net(tmp_path, nursery) -> tuple[Net, list[Running], SigningKey]:
    """Three nodes (node 0 the one authority) in a mesh, READINGS readings committed on all."""
    net = Net(tmp_path, 3, config=CONFIG, params=FAST)
    nodes = [await net.start(nursery, 0)]
    for i in (1, 2):
        nodes.append(await net.start(nursery, i, bootnodes=(net.p2p(0),)))
    await net.wait_mesh()
    device = SigningKey.generate()
    async with net.client(0) as client:
        await net.enroll(client, net.keys[0], device)
        readings = [kit.sealed_reading(device, seq, net.now_ms(), net.chain_id)
                    for seq in range(1, READINGS + 1)]
        await client.call("submit_readings", txs=[r.raw.hex() for r in readings])
        with pytest.raises(Exception, match="already"):  # refused: counted by its reason
            await client.call("submit_reading", tx=readings[0].raw.hex())
    await net.wait(lambda: all(n.chain.store.tx_location(readings[-1].id) for n in nodes),
                   "readings committed everywhere")
    return net, nodes, device


async def test_each_metric_is_the_figure_its_service_keeps(tmp_path, nursery, autojump_clock):
    net, nodes, _ = await loaded_net(tmp_path, nursery)
    for i, node in enumerate(nodes):
        samples = scrape(node)  # and the figures, in the same instant:
        chain, admission = node.chain, node.admission.stats()
        p2p = node.p2p.stats()
        assert value(samples, "iomtnode_build_info", version=__version__) == 1
        assert value(samples, "iomtnode_is_authority") == (i == 0)
        assert value(samples, "iomtnode_height") == chain.height > 2
        assert value(samples, "iomtnode_committed_transactions_total") == chain.committed_txs
        assert value(samples, "iomtnode_authorities") == 1
        assert value(samples, "iomtnode_mempool_transactions") == len(node.mempool)
        assert value(samples, "iomtnode_signatures_verified_total") == (
            admission.signatures_verified + node.sync.stats().signatures_verified) > 0
        assert total(samples, "iomtnode_transactions_received_total") == sum(
            admission.received_txs.values())
        assert value(samples, "iomtnode_sync_target_height") == node.sync.target
        outbound = sum(p.outbound for p in p2p.peers)
        assert value(samples, "iomtnode_p2p_peers", direction="outbound") == outbound
        assert value(samples, "iomtnode_p2p_peers", direction="inbound") == 2 - outbound
        for kind, traffic in p2p.traffic.items():
            assert value(samples, "iomtnode_p2p_messages_total", kind=kind,
                         direction="in") == traffic.messages_in
            assert value(samples, "iomtnode_p2p_bytes_total", kind=kind,
                         direction="out") == traffic.bytes_out
        # every committed reading once, in seconds, in the buckets of its delay
        commits = node.figures.commit_delay
        assert value(samples, "iomtnode_submit_to_final_seconds_count") == commits.total >= (
            READINGS)
        assert value(samples, "iomtnode_submit_to_final_seconds_bucket", le="+Inf") == (
            commits.total)
        assert value(samples, "iomtnode_submit_to_final_seconds_sum") == pytest.approx(
            commits.histogram().sum_ms / 1000)
    author = scrape(nodes[0])
    assert value(author, "iomtnode_transactions_received_total", source="client") == (
        2 + READINGS + 1)  # the enrollment, the batch, the refused copy
    assert value(author, "iomtnode_transactions_rejected_total", reason="duplicate_tx") == 1
    follower = scrape(nodes[1])  # its readings came from a peer: each timed on arrival
    assert value(follower, "iomtnode_gossip_delay_seconds_count") == (
        nodes[1].figures.gossip_delay.total) > 0
    await net.wait_height(nodes[0].chain.height)


async def test_refusals_and_drops_are_exposed_at_zero_before_the_first(tmp_path, nursery,
                                                                      autojump_clock):
    # a series that appears only with its first event hides that event from rate() and
    # increase(): the documented alert on increase(iomtnode_mempool_dropped_total[15m]) never
    # fired for a node's first drops, nor "Readings refused" for its first refusals
    net = Net(tmp_path, 1, config=CONFIG, params=FAST)
    node = await net.start(nursery, 0)
    samples = scrape(node)
    for reason in ("bad_signature", "revoked_device", "unknown_device", "mempool_full",
                   "replayed_sequence", "stale_epoch"):
        assert value(samples, "iomtnode_transactions_rejected_total", reason=reason) == 0
        assert value(samples, "iomtnode_mempool_dropped_total", reason=reason) == 0
    await net.wait_height(1)


async def test_a_node_that_catches_up_counts_its_synced_blocks(tmp_path, nursery,
                                                               autojump_clock):
    net = Net(tmp_path, 2, config=CONFIG, params=FAST)
    author = await net.start(nursery, 0)
    await net.wait_height(12, [author])
    late = await net.start(nursery, 1, bootnodes=(net.p2p(0),))
    await net.wait_height(author.chain.height, [late])
    samples = scrape(late)
    synced = value(samples, "iomtnode_sync_blocks_total")
    assert synced == late.sync.stats().synced_blocks >= 10  # the catch-up, not live relay
    assert synced <= late.chain.height
    assert value(scrape(author), "iomtnode_sync_blocks_total") == 0


async def test_bans_and_penalties_are_counted_without_naming_the_peer(tmp_path, nursery,
                                                                      autojump_clock):
    net = Net(tmp_path, 2, config=CONFIG, params=FAST)
    a = await net.start(nursery, 0)
    b = await net.start(nursery, 1, bootnodes=(net.p2p(0),))
    await net.wait_mesh()
    [peer] = a.p2p.host.peers()
    a.p2p.host.penalize(peer, 5, "blocks nobody asked for")
    a.p2p.host.ban(b.node_id, 60, "by the test")
    samples = scrape(a)
    assert value(samples, "iomtnode_p2p_penalties_total", reason="blocks nobody asked for") == 1
    assert value(samples, "iomtnode_p2p_bans_total") == 1
    assert value(samples, "iomtnode_p2p_banned_peers") == 1
    assert value(samples, "iomtnode_p2p_peers", direction="outbound") + value(
        samples, "iomtnode_p2p_peers", direction="inbound") == 0


async def test_the_names_are_the_contract_and_no_label_names_a_key(tmp_path, nursery,
                                                                   autojump_clock):
    _, nodes, device = await loaded_net(tmp_path, nursery)
    contract = {spec.name: spec for spec in METRICS}
    for node in nodes:
        samples = scrape(node)
        families = exposed_names(exposition(node))
        ours = {name for name in families if name.startswith("iomtnode_")}
        assert ours == set(contract)
        assert families - ours == PROCESS_METRICS
        for name, labels in samples:
            spec = contract.get(family_name(name))
            if spec is not None:  # the labels the contract names (and a histogram's le)
                assert {k for k, _ in labels} - {"le"} == set(spec.labels), name
            for _, label_value in labels:  # no key or id of a device, patient or peer
                assert not re.search(r"[0-9a-f]{16}", label_value), (name, label_value)
                assert device.public.hex()[:16] not in label_value


PROCESS_METRICS = {"process_cpu_seconds_total", "process_virtual_memory_bytes",
                   "process_resident_memory_bytes", "process_start_time_seconds",
                   "process_open_fds", "process_max_fds", "python_info"}


def family_name(sample: str) -> str:
    """A sample's metric: a counter keeps its ``_total``; a histogram's series drop their
    suffix."""
    for suffix in ("_bucket", "_count", "_sum"):
        if sample.endswith(suffix) and sample.removesuffix(suffix) in HISTOGRAMS:
            return sample.removesuffix(suffix)
    return sample


HISTOGRAMS = {spec.name for spec in METRICS if spec.kind == "histogram"}
