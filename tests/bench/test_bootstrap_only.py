"""The bootstrap phase alone: the chain an earlier run kept, copied without its added node."""

from __future__ import annotations

import json

from iomtnode.bench.bootstrap import BENCH_JSON, LOCALNET, copy_chain
from iomtnode.home import Home
from iomtnode.localnet.layout import Manifest, add_node_home, prepare
from iomtnode.localnet.procs import ProcRef


def test_the_copy_keeps_the_authorities_and_drops_the_run_s_bootstrap_node(tmp_path):
    kept = tmp_path / "run"
    manifest = prepare(kept / LOCALNET, 2, base_port=None)
    manifest.nodes[0].proc = ProcRef(12345, 1)  # as the run left it
    add_node_home(manifest)  # the run's own bootstrap node: not an authority
    (kept / BENCH_JSON).write_text(json.dumps({"bootstrap": {"readings": 1234},
                                               "node_env": {}}))
    assert copy_chain(kept, tmp_path / "copy") == 1234
    copy = Manifest.load(tmp_path / "copy")
    assert [n.name for n in copy.nodes] == ["node1", "node2"]
    assert all(n.authority and n.proc is None for n in copy.nodes)
    for node in copy.nodes:
        assert node.home == (tmp_path / "copy" / node.name).resolve()
        Home(node.home).check()
    assert not (tmp_path / "copy" / "node3").exists()
