"""How a localnet reaches nodes whose API speaks TLS: read from each home's config, kept in
localnet.json, passed to the simulator; refused with --netns, where no certificate made
beforehand can name a node's address."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from iomtnode.config import load_config, render
from iomtnode.home import Home
from iomtnode.localnet import LocalnetError, Manifest, prepare
from iomtnode.localnet.procs import simulator_command
from iomtnode.localnet.topology import set_address, use_api_tls


def two_nodes(tmp_path: Path) -> Manifest:
    """Two nodes, node1's API with TLS (the files need not exist: the node checks them)."""
    manifest = prepare(tmp_path / "net", 2, base_port=None)
    path = Home(manifest.nodes[0].home).config_path
    path.write_text(render(dataclasses.replace(
        load_config(path, env={}), api_tls_cert="tls/api.crt", api_tls_key="tls/api.key")))
    return manifest


def test_a_node_with_api_tls_is_reached_over_wss_trusting_its_certificate(tmp_path: Path):
    manifest = two_nodes(tmp_path)
    use_api_tls(manifest, {}, netns_mode=False)
    node1, node2 = Manifest.load(manifest.dir).nodes  # recorded for `status`, `chaos`
    assert node1.api == f"wss://{node1.api_listen}/api/v1"
    assert node1.api_ca == node1.home / "tls" / "api.crt"
    assert node2.api.startswith("ws://") and node2.api_ca is None
    command = simulator_command(node1, 4, 10.0)
    assert command[command.index("--api-ca") + 1] == str(node1.api_ca)
    assert "--api-ca" not in simulator_command(node2, 4, 10.0)
    set_address(node1, "10.7.0.9")  # a move keeps the scheme
    assert node1.api.startswith("wss://10.7.0.9:")


def test_the_environment_counts_as_the_node_will_read_it(tmp_path: Path):
    manifest = prepare(tmp_path / "net", 1, base_port=None)
    use_api_tls(manifest, {"IOMTNODE_API_TLS_CERT": "/etc/api.crt",
                           "IOMTNODE_API_TLS_KEY": "/etc/api.key"}, netns_mode=False)
    assert manifest.nodes[0].api.startswith("wss://")
    assert manifest.nodes[0].api_ca == Path("/etc/api.crt")
    use_api_tls(manifest, {}, netns_mode=False)  # unset again: plain ws:// again
    assert manifest.nodes[0].api.startswith("ws://") and manifest.nodes[0].api_ca is None


def test_netns_mode_refuses_an_api_with_tls_naming_the_setting(tmp_path: Path):
    manifest = two_nodes(tmp_path)
    with pytest.raises(LocalnetError, match="node1 sets api_tls_cert: in --netns mode"):
        use_api_tls(manifest, {}, netns_mode=True)
