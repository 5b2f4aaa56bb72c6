"""The CI chaos subset (deploy/chaos/ci.toml) on a real 4-node localnet under load: every
scenario that can run here holds I1-I5; the ones needing namespaces run as root only."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from iomtnode.localnet.suite import ChaosManifest, run_suite
from tests.e2e.chaosnet import ChaosNet, LoopbackChaosNet

pytestmark = [pytest.mark.e2e]
REPO = Path(__file__).resolve().parents[2]
CI = REPO / "deploy" / "chaos" / "ci.toml"


NETNS = pytest.param(True, id="netns", marks=[
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(ChaosNet is LoopbackChaosNet,
                       reason="this checkout's Localnet has no network namespaces")])


@pytest.mark.timeout(600)
@pytest.mark.parametrize("netns", [pytest.param(False, id="loopback"), NETNS])
async def test_ci_chaos_subset_holds_every_invariant(tmp_path: Path, netns: bool):
    manifest = ChaosManifest.load(CI).select(netns=netns)
    reports = await run_suite(manifest, tmp_path, start=ChaosNet.start)
    (tmp_path / "reports.json").write_text(json.dumps(reports, indent=1))
    ran = [r for r in reports if "skipped" not in r]
    assert ran, "no scenario ran"
    bad = {f"{r['scenario']}/{r['seed']}": r["violations"] for r in reports if not r["ok"]}
    assert not bad, json.dumps(bad, indent=1)
