"""The pure parts of --netns localnets, without root: names and addresses, nftables rule
text, fault state to rules, the delay proxy's copying, and the loopback refusals."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from iomtnode.localnet import Localnet, LocalnetError, Manifest, prepare
from iomtnode.localnet.delayproxy import delayed_copy, is_outbound, parse_original_dst
from iomtnode.localnet.faults import node_rules
from iomtnode.localnet.layout import ProcRef, open_or_prepare
from iomtnode.localnet.netns import (
    FIRST_NODE_HOST,
    LAST_HOST,
    ROOT_HINT,
    NetnsInfo,
    choose_prefix,
    choose_subnet,
    parse_links,
    parse_namespaces,
    parse_subnets,
    require_tools,
)
from iomtnode.localnet.nft import PROXY_MARK, PROXY_PORT, NodeRules, render
from iomtnode.localnet.observe import process_figures
from iomtnode.localnet.topology import node_command, set_address, use_loopback

IFNAMSIZ = 15  # Linux interface names are at most 15 characters


@pytest.fixture
def info() -> NetnsInfo:
    return NetnsInfo(prefix="iln1a2b", subnet=77)


@pytest.fixture
def netns_manifest(tmp_path: Path, info: NetnsInfo) -> Manifest:
    manifest = prepare(tmp_path / "net", 4, base_port=None)
    for entry in manifest.nodes:
        set_address(entry, info.take_ip(()))
    manifest.netns = info
    return manifest


# ---- names and addresses -----------------------------------------------------------------

def test_names_fit_the_kernel_and_carry_the_prefix(info):
    assert info.bridge == "iln1a2bbr" and info.host_ip == "10.77.77.1"
    assert info.namespace("node12") == "iln1a2b-node12"
    assert [info.veth(i) for i in (0, 63)] == ["iln1a2bv1", "iln1a2bv64"]
    assert all(len(n) <= IFNAMSIZ for n in (info.bridge, info.veth(63)))


def test_addresses_are_handed_out_once_then_the_lowest_free(info):
    first = [info.take_ip(()) for _ in range(3)]
    assert first == ["10.77.77.11", "10.77.77.12", "10.77.77.13"]
    assert info.take_ip(["10.77.77.14"]) == "10.77.77.15"  # in use: skipped
    info.next_host = LAST_HOST + 1  # every address handed out once (many moves)
    assert info.take_ip(["10.77.77.11", "10.77.77.12"]) == "10.77.77.13"
    in_use = [info.ip(h) for h in range(FIRST_NODE_HOST, LAST_HOST + 1)]
    with pytest.raises(LocalnetError, match="no free address"):
        info.take_ip(in_use)


def test_subnet_and_prefix_avoid_what_the_host_uses():
    rng = random.Random(5)
    used = set(range(1, 254))
    assert choose_subnet(used, rng) == 254
    assert {choose_subnet({7}, random.Random(s)) for s in range(200)} - {7} == \
        {choose_subnet({7}, random.Random(s)) for s in range(200)}
    with pytest.raises(LocalnetError, match="in use"):
        choose_subnet(set(range(1, 255)), rng)
    taken = [choose_prefix([], random.Random(9)) + "-node1"]
    assert not choose_prefix(taken, random.Random(9)).startswith(taken[0][:7])
    assert choose_prefix([], rng).startswith("iln")


def test_ip_output_is_parsed():
    assert parse_subnets("2: eth0    inet 192.0.2.2/24 brd\n9: x    inet 10.77.3.1/24 "
                         "scope\n10: y    inet 10.77.44.1/24\n11: z   inet 10.78.5.1/24") == {3, 44}
    assert parse_namespaces("iln1-node2 (id: 3)\niln1-node1\n\n") == ["iln1-node2", "iln1-node1"]
    assert parse_links("1: lo: <LOOPBACK> mtu\n7: iln1v1@if2: <BROADCAST> mtu\n") == \
        ["lo", "iln1v1"]


def test_without_root_or_tools_the_error_says_what_to_do():
    def found(_: str) -> str:
        return "/usr/sbin/x"

    with pytest.raises(LocalnetError) as raised:
        require_tools(euid=1000, which=found)
    assert str(raised.value) == ROOT_HINT and "sudo" in ROOT_HINT
    with pytest.raises(LocalnetError, match="apt-get install -y nftables"):
        require_tools(euid=0, which=lambda n: None if n == "nft" else "/x")
    with pytest.raises(LocalnetError, match="iproute2"):
        require_tools(euid=0, which=lambda n: None if n == "ip" else "/x")
    require_tools(euid=0, which=found)


def test_manifest_keeps_the_namespaces_faults_and_proxies(netns_manifest):
    netns_manifest.netns.blocked.append(("node1", "node3"))
    netns_manifest.netns.loss["node2"] = 12.5
    netns_manifest.netns.delay["node4"] = 50.0
    netns_manifest.proxies["node4"] = ProcRef(4321, 77)
    netns_manifest.save()
    loaded = Manifest.load(str(netns_manifest.dir))  # a str path works too
    assert loaded.to_json() == netns_manifest.to_json()
    assert loaded.netns == netns_manifest.netns and loaded.proxies == {"node4": ProcRef(4321, 77)}


def test_a_netns_node_runs_in_its_namespace_with_its_api_on_every_address(netns_manifest):
    entry = netns_manifest.node("node2")
    assert entry.api == "ws://10.77.77.12:7545/api/v1"
    assert entry.p2p == "wss://10.77.77.12:7001/p2p/v1"
    command = node_command(netns_manifest, entry)
    assert command[:4] == ["ip", "netns", "exec", "iln1a2b-node2"]
    assert command[command.index("--api") + 1] == "0.0.0.0:7545"
    assert command[command.index("--p2p") + 1] == "10.77.77.12:7001"
    netns_manifest.netns = None
    assert node_command(netns_manifest, entry)[0] == sys.executable


def test_a_loopback_start_moves_netns_addresses_back_to_loopback(netns_manifest):
    netns_manifest.netns = None
    use_loopback(netns_manifest)
    again = open_or_prepare(str(netns_manifest.dir), None)
    assert all(n.api.startswith("ws://127.0.0.1:") and n.p2p.startswith("wss://127.0.0.1:")
               for n in again.nodes)
    assert len({n.p2p for n in again.nodes}) == 4


# ---- nftables rules ----------------------------------------------------------------------

HOST = "10.77.77.1"


def test_no_fault_renders_a_script_that_only_removes_the_table():
    assert render(NodeRules(host_ip=HOST)) == (
        "add table inet iomt_faults\ndelete table inet iomt_faults\n")


def test_blocked_peers_are_dropped_both_ways_and_the_host_never():
    script = render(NodeRules(host_ip=HOST, blocked=("10.77.77.13", "10.77.77.12")))
    assert "ip saddr { 10.77.77.12, 10.77.77.13 } counter drop" in script
    assert "ip daddr { 10.77.77.12, 10.77.77.13 } counter drop" in script
    assert "numgen" not in script and "redirect" not in script
    with pytest.raises(ValueError, match="host"):  # API calls must keep working
        NodeRules(host_ip=HOST, blocked=("10.77.77.12", HOST))
    assert script.startswith("add table inet iomt_faults\ndelete table inet iomt_faults\n")


def test_loss_draws_basis_points_and_spares_the_host_and_lossy_peers():
    script = render(NodeRules(host_ip=HOST, loss_percent=12.34, lossy_peers=("10.77.77.14",)))
    assert ('iifname "eth0" ip saddr != { 10.77.77.1, 10.77.77.14 } '
            "numgen random mod 10000 < 1234 counter drop") in script
    assert ('oifname "eth0" ip daddr != 10.77.77.1 '
            "numgen random mod 10000 < 1234 counter drop") in script
    with pytest.raises(ValueError):
        NodeRules(host_ip=HOST, loss_percent=100.5)


def test_loss_of_100_percent_drops_every_packet_without_a_draw_nft_refuses():
    # `numgen random mod 10000 < 10000`: nft rejects the value 10000 (its range is 0-9999)
    script = render(NodeRules(host_ip=HOST, loss_percent=100.0))
    assert "numgen" not in script
    assert 'oifname "eth0" ip daddr != 10.77.77.1 counter drop' in script
    assert 'iifname "eth0" ip saddr != { 10.77.77.1 } counter drop' in script


def test_delay_redirects_inbound_and_own_outbound_p2p_to_the_proxy():
    script = render(NodeRules(host_ip=HOST, delayed=True))
    assert "type nat hook prerouting priority -100" in script
    assert f'iifname "eth0" tcp dport 7001 counter redirect to :{PROXY_PORT}' in script
    assert (f'oifname "eth0" meta mark != {PROXY_MARK:#x} tcp dport 7001 counter redirect '
            f"to :{PROXY_PORT}") in script  # the proxy's own connections pass


def test_delay_cuts_direct_p2p_connections_but_not_the_proxys_nor_resets():
    """NAT redirects new connections only: the ones the node already has are reset."""
    script = render(NodeRules(host_ip=HOST, delayed=True))
    mark = f"{PROXY_MARK:#x}"
    cut = "tcp flags & rst == 0 counter reject with tcp reset"
    input_chain = script.split("chain input {")[1].split("}")[0]
    output_chain = script.split("chain output {")[1].split("}")[0]
    assert f'iifname "eth0" tcp dport 7001 {cut}' in input_chain  # a peer's packets
    assert f'iifname "eth0" tcp sport 7001 ct mark != {mark} {cut}' in input_chain
    assert f'oifname "eth0" tcp sport 7001 {cut}' in output_chain  # the node's own
    assert f'oifname "eth0" tcp dport 7001 ct mark != {mark} {cut}' in output_chain
    # the proxy's upstream connections are known by their mark in both directions
    assert output_chain.index(f"meta mark {mark} ct mark set {mark}") < \
        output_chain.index("reject")
    assert script.count("reject") == 4 and "7545" not in script  # p2p only, not the API
    undelayed = render(NodeRules(host_ip=HOST, blocked=("10.77.77.12",)))
    assert "reject" not in undelayed and "ct mark" not in undelayed


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None,
                    reason="nft --check needs root and nftables")
def test_every_rendered_script_is_valid_nftables():
    rules = NodeRules(host_ip=HOST, blocked=("10.77.77.12",), loss_percent=30.0,
                      lossy_peers=("10.77.77.13",), delayed=True)
    for script in (render(rules), render(NodeRules(host_ip=HOST))):
        done = subprocess.run(["nft", "--check", "-f", "-"], input=script, text=True,
                              capture_output=True, check=False)
        assert done.returncode == 0, done.stderr


def test_fault_state_becomes_each_nodes_rules(netns_manifest):
    info = netns_manifest.netns
    info.blocked += [("node1", "node3"), ("node2", "node3")]
    info.loss.update({"node1": 30.0, "node2": 30.0})
    info.delay["node4"] = 50.0
    rules = {n.name: node_rules(netns_manifest, n.name) for n in netns_manifest.nodes}
    assert rules["node3"].blocked == ("10.77.77.11", "10.77.77.12")
    assert rules["node1"].blocked == ("10.77.77.13",) and rules["node4"].blocked == ()
    assert rules["node1"].loss_percent == 30.0 and rules["node1"].lossy_peers == ("10.77.77.12",)
    assert rules["node3"].loss_percent == 0.0
    assert rules["node3"].lossy_peers == ("10.77.77.11", "10.77.77.12")
    assert [n for n, r in rules.items() if r.delayed] == ["node4"]
    set_address(netns_manifest.node("node1"), "10.77.77.20")  # a node that moved
    assert node_rules(netns_manifest, "node3").blocked == ("10.77.77.12", "10.77.77.20")


async def test_loopback_refuses_loss_and_delay_with_what_to_do(tmp_path):
    manifest = prepare(tmp_path / "net", 2, base_port=None)
    async with Localnet.attach(str(manifest.dir)) as net:
        assert not net.netns
        with pytest.raises(LocalnetError, match="loss needs --netns"):
            await net.loss(30.0)
        with pytest.raises(LocalnetError, match="delay needs --netns"):
            await net.delay(50.0, ["node2"])


# ---- the delay proxy ---------------------------------------------------------------------

def test_original_destination_and_direction():
    raw = bytes([2, 0, 0x1B, 0x59, 10, 77, 3, 12]) + bytes(8)
    assert parse_original_dst(raw) == ("10.77.3.12", 7001)
    assert is_outbound("127.0.0.1") and not is_outbound("10.77.3.12")


async def test_each_chunk_arrives_its_delay_after_it_was_sent_in_order(autojump_clock):
    src_send, src_receive = trio.testing.memory_stream_one_way_pair()
    dst_send, dst_receive = trio.testing.memory_stream_one_way_pair()
    arrived: list[tuple[float, bytes]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(delayed_copy, src_receive, dst_send, 0.05)
        start = trio.current_time()
        await src_send.send_all(b"first")
        await trio.sleep(0.01)
        await src_send.send_all(b"second")
        while sum(len(d) for _, d in arrived) < len(b"firstsecond"):
            data = await dst_receive.receive_some()
            arrived.append((trio.current_time() - start, data))
        await src_send.aclose()  # EOF: the copy ends
    assert b"".join(d for _, d in arrived) == b"firstsecond"
    assert arrived[0][0] == pytest.approx(0.05, abs=1e-3)
    assert arrived[-1][0] == pytest.approx(0.06, abs=1e-3)  # not 0.1: delays do not add up


def test_process_figures_are_read_from_proc():
    figures = process_figures(os.getpid())
    assert figures["fds"] >= 3 and figures["rss_bytes"] > 1_000_000
    with pytest.raises(LocalnetError, match="cannot read"):
        process_figures(os.getpid(), proc_root=Path("/nonexistent"))


async def test_netns_faults_refuse_bad_values_before_touching_anything(netns_manifest):
    netns_manifest.save()
    async with Localnet.attach(netns_manifest.dir) as net:
        assert net.netns
        for percent in (0.0, -1.0, 100.5, 0.004):  # 0.004 %: a rule of 0 in 10,000, no loss
            with pytest.raises(LocalnetError, match="loss must be"):
                await net.loss(percent)
        for ms in (0.0, 10_001.0):
            with pytest.raises(LocalnetError, match="delay must be"):
                await net.delay(ms, ["node2"])
        with pytest.raises(LocalnetError, match="cannot drop itself"):
            await net.drop_peer("node2", "node2")
        with pytest.raises(LocalnetError, match="no node named"):
            await net.loss(5.0, ["node1", "node9"])
        assert net.manifest.netns.loss == {}
    assert Manifest.load(netns_manifest.dir).netns == NetnsInfo(
        prefix="iln1a2b", subnet=77, next_host=15)  # no fault was recorded
