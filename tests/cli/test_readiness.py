"""``status --ready``'s rule (when a node may be sent work), case by case; the command itself
against real node processes is in tests/e2e/test_readiness.py."""

from __future__ import annotations

import json

import pytest

from iomtnode.cli.query import readiness, status_text

A, B, C, D = "aa" * 32, "bb" * 32, "cc" * 32, "dd" * 32
PEER = {"node_id": B, "address": "127.0.0.1:7546", "outbound": True}


def status(height: int, target: int, authorities: list[str], peers: list[dict],
           node_id: str = A) -> dict:
    return {"height": height, "sync_target": target, "authorities": authorities,
            "peers": peers, "node_id": node_id}


@pytest.mark.parametrize(("case", "reason"), [
    # one authority, alone: it makes its own blocks
    (status(0, 0, [A], []), None),
    (status(7, 7, [A], []), None),
    # four authorities, caught up and connected
    (status(12, 12, [A, B, C, D], [PEER]), None),
    # a sync target a block ahead of what sync last saw is still caught up
    (status(13, 12, [A, B, C, D], [PEER]), None),
    # behind its sync target: catching up
    (status(3, 40, [A, B, C, D], [PEER]), "catching up: height 3 of 40"),
    (status(3, 40, [A], [PEER]), "catching up: height 3 of 40"),
    # caught up with nobody to finalize with
    (status(12, 12, [A, B, C, D], []), "no peer connected (the network has 4 authorities)"),
    (status(0, 0, [A, B], []), "no peer connected (the network has 2 authorities)"),
    # a node that is not the lone authority of its chain (a follower, an API node) gets
    # every block from a peer: alone it is not caught up with anything
    (status(0, 0, [A], [], node_id=D),
     "no peer connected (this node is not an authority: it gets its blocks from peers)"),
    (status(5, 5, [A], [PEER], node_id=D), None),
])
def test_readiness(case: dict, reason: str | None):
    assert readiness(case) == reason


def test_status_text_aligns_every_key_and_prints_values_as_json():
    # lists and objects printed as Python reprs (['aa..'], {'committed_txs': 0}, None) and
    # keys longer than the column (authorities_with_evidence) pushed their values aside
    text = status_text({"chain_id": "iomt-local", "height": 3, "authorities": [A],
                        "authorities_with_evidence": [], "last_commit": None,
                        "peers": [PEER]})
    width = len("authorities_with_evidence")
    assert text.splitlines() == [
        f"{'chain_id':{width}}  iomt-local",
        f"{'height':{width}}  3",
        f"{'authorities':{width}}  [\"{A}\"]",
        "authorities_with_evidence  []",
        f"{'last_commit':{width}}  null",
        f"{'peers':{width}}  " + json.dumps([PEER]),
    ]
