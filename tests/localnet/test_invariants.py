"""The chaos invariants I1-I5 as pure checks: each holds on good data and fails on bad."""

from __future__ import annotations

from collections import Counter

from iomtnode.localnet.invariants import (
    Bounds,
    check_accepted_committed,
    check_converged,
    check_one_block_per_height,
    check_resources,
    check_resumed,
)

ID = [f"{i:064x}" for i in range(6)]


# ---- I1 ----------------------------------------------------------------------------------

def test_i1_holds_on_one_chain_of_different_lengths():
    found = check_one_block_per_height({"a": {0: "g", 1: "x", 2: "y"}, "b": {0: "g", 1: "x"}})
    assert found.ok and found.figure == {"heights_compared": 2, "forks": 0}


def test_i1_finds_two_blocks_at_a_height_even_past_a_third_nodes_head():
    found = check_one_block_per_height({"a": {0: "g", 1: "x", 2: "y"},
                                        "b": {0: "g", 1: "x", 2: "z"}, "c": {0: "g"}})
    assert not found.ok and found.figure["forks"] == 1
    assert found.detail[0].startswith("height 2: a=y, b=z")


# ---- I2 ----------------------------------------------------------------------------------

def counts(*ids: str) -> Counter[str]:
    return Counter(ids)


def test_i2_holds_when_every_accepted_reading_is_once_on_every_node():
    found = check_accepted_committed(ID[:3], {"a": counts(*ID[:4]), "b": counts(*ID[:3])}, {})
    assert found.ok
    assert found.figure["accepted"] == 3 and found.figure["committed_on_every_node"] == 3


def test_i2_finds_a_reading_missing_on_one_node():
    found = check_accepted_committed(ID[:3], {"a": counts(*ID[:3]), "b": counts(*ID[:2])}, {})
    assert not found.ok and found.figure["missing"] == {"a": 0, "b": 1}
    assert "b: 1 accepted readings neither committed" in found.detail[0]


def test_i2_accepts_a_reading_reported_dropped_with_its_reason():
    found = check_accepted_committed(ID[:3], {"a": counts(*ID[:2]), "b": counts(*ID[:2])},
                                     {ID[2]: "stale sequence number"})
    assert found.ok and found.figure["dropped_reasons"] == {"stale sequence number": 1}


def test_i2_finds_a_reading_committed_twice():
    found = check_accepted_committed(ID[:2], {"a": counts(ID[0], ID[1], ID[1])},
                                     {ID[1]: "dropped"})
    assert not found.ok and found.figure["duplicated"] == {"a": 1}


def test_i2_fails_when_no_node_was_read():
    assert not check_accepted_committed(ID[:1], {}, {}).ok


# ---- I3 and I4 ---------------------------------------------------------------------------

def test_i3_measures_the_slowest_resumption_against_the_bound():
    held = check_resumed([("kill node2", 1.5), ("restart node2", 0.4)], 5.0)
    assert held.ok and held.figure == {"worst_s": 1.5, "measured": 2}
    late = check_resumed([("kill node2", 6.0), ("restart node2", None)], 5.0)
    assert not late.ok and late.figure["worst_s"] is None
    assert late.detail == ("after kill node2: 6.00 s", "after restart node2: no new height")


def test_i4_needs_convergence_within_the_bound():
    assert check_converged(2.0, 10.0).ok
    assert not check_converged(12.0, 10.0).ok
    assert not check_converged(None, 10.0).ok


# ---- I5 ----------------------------------------------------------------------------------

def res(peers: int = 3, fds: int = 40, rss_mb: float = 100, remote: tuple[str, ...] = ()
        ) -> dict:
    return {"pid": 1, "peers": peers, "fds": fds, "rss_bytes": int(rss_mb * 2**20),
            "remote_addresses": list(remote)}


def test_i5_holds_within_bounds():
    found = check_resources({"a": res(), "b": res(remote=("127.0.0.1:7002",))},
                            ["127.0.0.5:7001"], Bounds())
    assert found.ok and found.figure["max_peers"] == 3 and found.figure["max_rss_mb"] == 100


def test_i5_finds_each_resource_over_its_bound():
    bounds = Bounds(max_peers=4, max_fds=100, max_rss_mb=200)
    for node, word in ((res(peers=5), "peers"), (res(fds=101), "open fds"),
                       (res(rss_mb=201), "RSS")):
        found = check_resources({"a": node}, [], bounds)
        assert not found.ok and word in found.detail[0]


def test_i5_finds_a_connection_to_a_left_address():
    moved = check_resources({"a": res(remote=("127.0.0.1:7001", "127.0.0.1:50123"))},
                            ["127.0.0.1:7001"], Bounds())
    assert not moved.ok and "127.0.0.1:7001" in moved.detail[0]
    # an IP that changed: every port on it is stale; a port alone names an exact listener
    readdressed = check_resources({"a": res(remote=("10.77.0.3:40000",))}, ["10.77.0.3"],
                                  Bounds())
    assert not readdressed.ok
    assert check_resources({"a": res(remote=("10.77.0.31:7001",))}, ["10.77.0.3"],
                           Bounds()).ok


def test_i5_fails_for_a_node_it_could_not_measure():
    found = check_resources({"a": res(), "b": {"error": "no such process"}}, [], Bounds())
    assert not found.ok and found.detail == ("b: not measured: no such process",)
